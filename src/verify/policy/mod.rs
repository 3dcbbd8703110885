//! NetworkPolicy. A network that does not enforce policies gets one default-deny try and a
//! "not enforced" row; an enforced one (its own engine, or kube-router's firewall beside the
//! built-in network) gets the matrix of `cases`: a row per check, naming the policy, the
//! client, the server, and what was expected and seen.

mod cases;

use super::workload::{create_when_ready, object, test_pod};
use super::*;
use cases::{CLIENT_LABEL, Case, Check, From, PEER_NAMESPACE_LABEL, Peer, Pods, To};

/// How long a policy may take to apply: an enforcing network programs it within seconds; one
/// that does not enforce policies is given a moment, then reported as such.
pub(super) fn policy_wait(enforced: bool) -> Duration {
    Duration::from_secs(if enforced { 20 } else { 3 })
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
    let wait = policy_wait(cni.enforces_network_policy()).as_secs();
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
                "not enforced by {}: {url} answers despite a default-deny policy ({} enforce them); \
                 spec.cni.networkPolicy: true adds an engine to builtin or flannel",
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

/// The policy rows, between the test pods on the first two nodes.
pub(super) async fn network_policy(
    ctx: &Ctx,
    client: &Client,
    pods: &Api<Pod>,
    running: &[TestPod],
    image: &str,
    report: &mut Report,
) -> Result<(), String> {
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
    let ns = pods.namespace().unwrap_or_default();
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    if !crate::cni::enforced(&ctx.cluster) {
        let cni = crate::cni::of(ctx.cluster.cni);
        let deny: NetworkPolicy = object(
            "NetworkPolicy",
            serde_json::json!({
                "metadata": {"name": "default-deny-ingress"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
            }),
        )?;
        create(&policies, &deny).await?;
        let u = url(&b.ip, POD_PORT);
        if !until(pods, &a.name, &u, false, policy_wait(false)).await {
            report.rows.push(policy_not_applied(
                cni,
                &crate::cni::ALL,
                subject,
                &u,
                &b.host,
            ));
        } else {
            report.rows.push(Row::pass(
                "network-policy",
                subject,
                format!("default-deny blocked {u}"),
            ));
        }
        return Ok(());
    }
    let matrix = match matrix_pods(client, pods, a, b, image).await {
        Ok(p) => p,
        Err(e) => {
            report.rows.push(
                Row::fail("network-policy", subject, e).with_cause(Some(format!(
                    "the runtime on {} or {}: `journalctl -u kubelet`",
                    a.host.name, b.host.name
                ))),
            );
            return Ok(());
        }
    };
    let dns_works = report
        .rows
        .iter()
        .any(|r| r.check == "dns" && r.outcome == Outcome::Pass)
        && !report
            .rows
            .iter()
            .any(|r| r.check == "dns" && r.outcome == Outcome::Fail);
    let dns_name = format!("kubernetes.default.svc.{}", ctx.cluster.dns_domain);
    let all = cases::cases(
        &matrix,
        &ctx.cluster.pod_subnet.to_string(),
        dns_works.then_some(dns_name.as_str()),
    );
    for case in all {
        run_case(ctx, client, &policies, &matrix, &case, report).await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(&matrix.elsewhere.namespace, &DeleteParams::background())
        .await;
    Ok(())
}

async fn create(policies: &Api<NetworkPolicy>, p: &NetworkPolicy) -> Result<(), String> {
    policies
        .create(&PostParams::default(), p)
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "creating NetworkPolicy {}: {e}",
                p.metadata.name.clone().unwrap_or_default()
            )
        })
}

/// The matrix's extra pods: a labelled client beside the server (with a readiness probe, the
/// kubelet's traffic), an unlabelled one on the client's node, and a labelled one in a second
/// namespace. Waited for until they run.
async fn matrix_pods(
    client: &Client,
    pods: &Api<Pod>,
    a: &TestPod,
    b: &TestPod,
    image: &str,
) -> Result<Pods, String> {
    let ns = pods.namespace().unwrap_or_default();
    let other_ns = format!("{ns}-peer");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = object(
        "Namespace",
        serde_json::json!({"metadata": {"name": other_ns, "labels": {
            "app.kubernetes.io/managed-by": "provision",
            NAMESPACE_LABEL: "true",
            PEER_NAMESPACE_LABEL: "true",
        }}}),
    )?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(|e| format!("creating namespace {other_ns}: {e}"))?;
    let others: Api<Pod> = Api::namespaced(client.clone(), &other_ns);
    let made = [
        ("verify-np-peer", &b.host, true, pods, true),
        ("verify-np-outsider", &a.host, false, pods, false),
        ("verify-np-elsewhere", &b.host, true, &others, false),
    ];
    for (name, host, labelled, api, probed) in &made {
        let mut pod = test_pod(name, image, Some(&host.name), false, None)?;
        let labels = pod.metadata.labels.get_or_insert_default();
        labels.insert("app".into(), "provision-verify-policy".into());
        labels.remove("provision.io/node");
        if *labelled {
            labels.insert(CLIENT_LABEL.into(), "client".into());
        }
        if *probed && let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.readiness_probe = Some(object(
                "Probe",
                serde_json::json!({"httpGet": {"port": POD_PORT, "path": "/"},
                                   "periodSeconds": 1, "failureThreshold": 1}),
            )?);
        }
        create_when_ready(api, &pod).await?;
    }
    let started = Instant::now();
    let mut found = Vec::new();
    for (name, host, _, api, probed) in &made {
        loop {
            let pod = api
                .get(name)
                .await
                .map_err(|e| format!("reading {name}: {e}"))?;
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            let up = if *probed {
                is_ready(&pod)
            } else {
                pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            };
            match ip {
                Some(ip) if up => {
                    found.push(Peer {
                        name: name.to_string(),
                        namespace: api.namespace().unwrap_or_default().to_string(),
                        host: (*host).clone(),
                        ip,
                    });
                    break;
                }
                _ if started.elapsed() > POD_WAIT => {
                    return Err(format!(
                        "the policy test pod {name} is not running after {} s: {}",
                        POD_WAIT.as_secs(),
                        super::workload::pending_reason(&pod)
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    let peer = |p: &TestPod| Peer {
        name: p.name.clone(),
        namespace: ns.to_string(),
        host: p.host.clone(),
        ip: p.ip.clone(),
    };
    let mut found = found.into_iter();
    let (Some(same), Some(outsider), Some(elsewhere)) = (found.next(), found.next(), found.next())
    else {
        return Err("internal: a policy test pod went missing".into());
    };
    Ok(Pods {
        server: peer(b),
        client: peer(a),
        peer: same,
        outsider,
        elsewhere,
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the check's traffic got through (once). Where it must be refused, no answer within
/// a second counts as refused (a policy drops it; the pods answer in milliseconds on their
/// link), so that each case does not wait out 3 s; an allowed check keeps 3 s for a slow answer.
async fn attempt(ctx: &Ctx, client: &Client, check: &Check) -> bool {
    match (&check.from, &check.to) {
        (From::Pod(p), To::Pod { peer, port }) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            let within = if check.allowed { 3 } else { 1 };
            let get = probe::wget_within(&url(&peer.ip, *port), within);
            probe::exec(&pods, &p.name, &get).await.is_ok()
        }
        (From::Pod(p), To::Dns(name)) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            let lookup = format!("timeout 3 nslookup {}", crate::ssh::shell_quote(name));
            probe::exec(&pods, &p.name, &lookup).await.is_ok()
        }
        (From::Node(h), To::Pod { peer, port }) => match ctx.session(h).await {
            Ok(s) => probe::fetch_from_node(&s, &peer.ip, *port).await.is_ok(),
            Err(_) => false,
        },
        (From::Node(_), To::Dns(_)) => false,
    }
}

/// Applies a case's policies, waits until every check sees what it expects (or the policy
/// wait runs out), writes a row per check, and deletes the policies again.
async fn run_case(
    ctx: &Ctx,
    client: &Client,
    policies: &Api<NetworkPolicy>,
    pods: &Pods,
    case: &Case,
    report: &mut Report,
) -> Result<(), String> {
    for p in &case.policies {
        create(policies, &object("NetworkPolicy", p.clone())?).await?;
    }
    let started = Instant::now();
    let within = policy_wait(true);
    let mut seen: Vec<Option<bool>> = vec![None; case.checks.len()];
    loop {
        let pending: Vec<usize> = (0..case.checks.len())
            .filter(|&i| seen[i] != Some(case.checks[i].allowed))
            .collect();
        if pending.is_empty() || started.elapsed() >= within {
            break;
        }
        let got = futures::future::join_all(
            pending
                .iter()
                .map(|&i| attempt(ctx, client, &case.checks[i])),
        )
        .await;
        for (i, g) in pending.iter().zip(got) {
            seen[*i] = Some(g);
        }
        if seen
            .iter()
            .zip(&case.checks)
            .any(|(s, c)| *s != Some(c.allowed))
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let took = started.elapsed().as_secs_f32();
    for (check, got) in case.checks.iter().zip(&seen) {
        let word = |allowed: bool| if allowed { "allowed" } else { "refused" };
        let detail = format!(
            "{}: expected {}, seen {} ({}; {took:.1} s)",
            case.name,
            word(check.allowed),
            got.map_or("nothing", word),
            check.placement()
        );
        let subject = format!("{}: {}", case.name, check.subject());
        report.rows.push(if *got == Some(check.allowed) {
            Row::pass("network-policy", subject, detail)
        } else {
            Row::fail("network-policy", subject, detail)
                .with_cause(Some(why_not_enforced(ctx, check).await))
        });
    }
    if case.kubelet_probe {
        // a probe every second that fails once makes the pod unready: give it three
        tokio::time::sleep(Duration::from_secs(3)).await;
        let api: Api<Pod> = Api::namespaced(client.clone(), &pods.peer.namespace);
        let ready = api.get(&pods.peer.name).await.is_ok_and(|p| is_ready(&p));
        let subject = format!(
            "{}: kubelet ({}) → {} readiness probe",
            case.name, pods.peer.host.name, pods.peer.name
        );
        let detail = format!(
            "{}: expected allowed, seen {}",
            case.name,
            if ready { "Ready" } else { "not Ready" }
        );
        report.rows.push(if ready {
            Row::pass("network-policy", subject, detail)
        } else {
            Row::fail("network-policy", subject, detail).with_cause(Some(format!(
                "the policy engine drops the kubelet's own traffic on {}: {}",
                pods.peer.host.name,
                crate::cni::policy_suspect(&ctx.cluster, &pods.peer.host)
            )))
        });
    }
    for p in &case.policies {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        policies
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|e| format!("deleting NetworkPolicy {name}: {e}"))?;
    }
    Ok(())
}

/// Why a policy check saw the wrong thing: the engine's unit down on the deciding node, else
/// where to look.
async fn why_not_enforced(ctx: &Ctx, check: &Check) -> String {
    let node = check.decided_on();
    if crate::cni::policy_engine::enabled(&ctx.cluster)
        && let Some(down) =
            cause::units_down(ctx, node, &[crate::cni::policy_engine::SERVICE]).await
    {
        return down;
    }
    format!(
        "the policy is not enforced as written on {}: check {}",
        node.name,
        crate::cni::policy_suspect(&ctx.cluster, node)
    )
}
