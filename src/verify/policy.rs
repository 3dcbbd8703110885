//! NetworkPolicy: a default-deny policy, then an allow by label; whether it must be enforced
//! comes from the network's descriptor.

use super::workload::object;
use super::*;

/// How long a default-deny policy may take to apply: an enforcing network programs it within
/// seconds; one that does not enforce policies is given a moment, then reported as such.
pub(super) fn policy_wait(cni: &dyn Cni) -> u64 {
    if cni.enforces_network_policy() { 20 } else { 3 }
}

/// The row when `url` on `node` still answered after a default-deny policy: a failure for a
/// network that enforces policies, "not enforced" (naming those that do, among `known`) for
/// one that does not.
pub fn policy_not_applied(
    cni: &dyn Cni,
    known: &[&dyn Cni],
    subject: String,
    url: &str,
    node: &Host,
) -> Row {
    let wait = policy_wait(cni);
    if cni.enforces_network_policy() {
        Row::fail(
            "network-policy",
            subject,
            format!("default-deny: {url} still answers after {wait} s"),
        )
        .with_cause(Some(format!(
            "{} is not enforcing policies on {}: check {}",
            cni.name(),
            node.name,
            cni.suspect(node)
        )))
    } else {
        Row::new(
            "network-policy",
            subject,
            Outcome::NotEnforced,
            format!(
                "not enforced by {}: {url} answers despite a default-deny policy ({} enforce them)",
                cni.name(),
                crate::cni::enforcing(known)
            ),
        )
    }
}

/// Polls a one-shot fetch until `want_answer` holds or `within` passes; whether it held.
pub(super) async fn until(
    pods: &Api<Pod>,
    from: &str,
    u: &str,
    want_answer: bool,
    within: Duration,
) -> bool {
    let started = Instant::now();
    loop {
        let answered = probe::exec(pods, from, &probe::wget(u)).await.is_ok();
        if answered == want_answer {
            return true;
        }
        if started.elapsed() >= within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A default-deny policy, then an allow by label: the client gets through, others do not.
pub(super) async fn network_policy(
    ctx: &Ctx,
    client: &Client,
    pods: &Api<Pod>,
    running: &[TestPod],
    report: &mut Report,
) -> Result<(), String> {
    let cni = crate::cni::of(ctx.cluster.cni);
    let (Some(a), Some(b)) = (running.first(), running.get(1)) else {
        report.rows.push(Row::skipped(
            "network-policy",
            "-",
            "needs test pods on two nodes",
        ));
        return Ok(());
    };
    let subject = format!("{} → {}", a.host.name, b.host.name);
    let baseline = report
        .rows
        .iter()
        .any(|r| r.check == "pod-to-pod" && r.subject == subject && r.outcome == Outcome::Pass);
    if !baseline {
        report.rows.push(Row::skipped(
            "network-policy",
            subject,
            "not checked: the pods do not reach each other without a policy",
        ));
        return Ok(());
    }
    let policies: Api<NetworkPolicy> =
        Api::namespaced(client.clone(), pods.namespace().unwrap_or_default());
    let deny: NetworkPolicy = object(
        "NetworkPolicy",
        serde_json::json!({
            "metadata": {"name": "deny-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }),
    )?;
    policies
        .create(&PostParams::default(), &deny)
        .await
        .map_err(|e| format!("creating NetworkPolicy deny-all: {e}"))?;
    let u = url(&b.ip, POD_PORT);
    let wait = policy_wait(cni);
    if !until(pods, &a.name, &u, false, Duration::from_secs(wait)).await {
        report.rows.push(policy_not_applied(
            cni,
            &crate::cni::ALL,
            subject,
            &u,
            &b.host,
        ));
        return Ok(());
    }
    let allow: NetworkPolicy = object(
        "NetworkPolicy",
        serde_json::json!({
            "metadata": {"name": "allow-client"},
            "spec": {
                "podSelector": {"matchLabels": {"provision.io/node": b.host.name}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"provision.io/role": "client"}}}]}],
            }
        }),
    )?;
    policies
        .create(&PostParams::default(), &allow)
        .await
        .map_err(|e| format!("creating NetworkPolicy allow-client: {e}"))?;
    let allowed = until(pods, &a.name, &u, true, Duration::from_secs(20)).await;
    let outsider = running.get(2);
    let kept_out = match outsider {
        Some(c) => until(pods, &c.name, &u, false, Duration::from_secs(5)).await,
        None => true,
    };
    report.rows.push(match (allowed, kept_out) {
        (true, true) => Row::pass(
            "network-policy",
            subject,
            match outsider {
                Some(c) => format!(
                    "default-deny blocked {u}; allow by label let the client in and kept {} out",
                    c.host.name
                ),
                None => format!("default-deny blocked {u}; allow by label let the client in"),
            },
        ),
        (false, _) => Row::fail(
            "network-policy",
            subject,
            format!("allow by label: {u} still blocked after 20 s"),
        ),
        (true, false) => Row::fail(
            "network-policy",
            subject,
            "allow by label also let a pod without the label in",
        ),
    });
    Ok(())
}
