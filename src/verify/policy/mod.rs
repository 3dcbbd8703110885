//! NetworkPolicy. A network that does not enforce policies gets one default-deny try and a
//! "not enforced" row; an enforced one (its own engine, or kube-router's firewall beside the
//! built-in network) gets the matrix of `cases`: a row per check, naming the policy, the
//! client, the server, and what was expected and seen.

mod cases;

use super::workload::{create_when_ready, object, test_pod};
use super::*;
use cases::{
    CASE_LABEL, CASES, CLIENT_LABEL, Case, Check, From, PEER_NAMESPACE_LABEL, Part, Peer, Planned,
    Pods, To,
};

/// The readiness probe of the matrix's probed pods (the kubelet's traffic): every second, one
/// failure (a timeout, where a policy drops it) makes the pod unready.
const PROBE_PERIOD_S: u64 = 1;
const PROBE_TIMEOUT_S: u64 = 1;

/// How long after a policy is seen in force a probed pod's Ready condition tells whether its
/// probes got through: the first probe after it is sent within a period, a dropped one fails a
/// timeout later, and the kubelet's status update takes a moment more to reach the API server.
fn probe_window() -> Duration {
    Duration::from_secs(PROBE_PERIOD_S + PROBE_TIMEOUT_S) + Duration::from_millis(300)
}

/// The `app` label of the matrix's pods (not the test Service's).
const MATRIX_APP_LABEL: &str = "provision-verify-policy";

/// Why the matrix's namespaces, pods or policies could not be made, from the error: the API
/// server refused one (an answer of its own), or did not answer.
fn matrix_not_made(error: &str) -> &'static str {
    if error.contains("ApiError") {
        "the API server refused a verify object (the error names it): an admission webhook or policy that applies to new namespaces, pods or NetworkPolicies; `kubectl get validatingwebhookconfigurations,validatingadmissionpolicies`"
    } else {
        "the API server did not answer while the matrix was made: see the api row, and `journalctl -u kube-apiserver` on the control planes"
    }
}

/// How long a policy may take to apply: an enforcing network programs it within seconds, but
/// learns of it through a watch that may lag after the API server restarted (`WATCH_LAG`); one
/// that does not enforce policies is given a moment, then reported as such.
pub(super) fn policy_wait(enforced: bool) -> Duration {
    if enforced {
        super::WATCH_LAG
    } else {
        Duration::from_secs(3)
    }
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

/// The matrix's pods, created and starting: on which nodes.
pub(super) struct Started {
    /// The verify namespace.
    ns: String,
    client_node: Host,
    server_node: Host,
    /// The cases whose policies were made with the pods, so that they are in force by the time
    /// the pods run (the engine programs them meanwhile).
    early: Vec<&'static str>,
}

impl Started {
    /// The node a pod of the matrix runs on.
    fn node_of(&self, p: &Planned) -> &Host {
        if p.beside_server {
            &self.server_node
        } else {
            &self.client_node
        }
    }
}

pub(super) use cases::namespaces;

/// Creates the matrix's namespaces, pods on the first two of `nodes` and the policies that name
/// no pod's address, without waiting for them, so they start while the other rows are checked.
/// None where no matrix runs: the network does not enforce policies, or there are fewer than two
/// nodes.
pub(super) async fn start(
    ctx: &Ctx,
    client: &Client,
    ns: &str,
    nodes: &[Host],
    image: &str,
) -> Result<Option<Started>, String> {
    let (Some(a), Some(b)) = (nodes.first(), nodes.get(1)) else {
        return Ok(None);
    };
    if !crate::cni::enforced(&ctx.cluster) {
        return Ok(None);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let made = cases::namespaces(ns).into_iter().map(|name| {
        let namespaces = namespaces.clone();
        async move {
            let mut labels = serde_json::json!({
                "app.kubernetes.io/managed-by": "provision",
                NAMESPACE_LABEL: "true",
            });
            if name == cases::peer_namespace(ns) {
                labels[PEER_NAMESPACE_LABEL] = "true".into();
            }
            let namespace: Namespace = object(
                "Namespace",
                serde_json::json!({"metadata": {"name": name, "labels": labels}}),
            )?;
            namespaces
                .create(&PostParams::default(), &namespace)
                .await
                .map(|_| ())
                .map_err(|e| format!("creating namespace {name}: {e}"))
        }
    });
    futures::future::try_join_all(made).await?;
    let plan = cases::plan(ns);
    let created = plan.iter().map(|p| async move {
        let host = if p.beside_server { b } else { a };
        let mut pod = test_pod(&p.name, image, Some(&host.name), None)?;
        let labels = pod.metadata.labels.get_or_insert_default();
        labels.insert("app".into(), MATRIX_APP_LABEL.into());
        // not a test pod of its node: those are listed by this label
        labels.remove("provision.io/node");
        if p.client_label {
            labels.insert(CLIENT_LABEL.into(), "client".into());
        }
        if let Some(case) = p.serves {
            labels.insert(CASE_LABEL.into(), case.into());
        }
        if p.probed
            && let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut())
        {
            c.readiness_probe = Some(object(
                "Probe",
                serde_json::json!({"httpGet": {"port": POD_PORT, "path": "/"},
                                   "periodSeconds": PROBE_PERIOD_S,
                                   "timeoutSeconds": PROBE_TIMEOUT_S, "failureThreshold": 1}),
            )?);
        }
        create_when_ready(&Api::namespaced(client.clone(), &p.namespace), &pod).await
    });
    let subnet = ctx.cluster.pod_subnet.to_string();
    let early: Vec<(&'static str, String, Vec<serde_json::Value>)> = CASES
        .iter()
        .filter_map(|&(case, scope)| {
            let made = cases::policies(case, &subnet, None)?;
            Some((case, cases::namespace_of(ns, case, scope), made))
        })
        .collect();
    let made = early.iter().flat_map(|(_, namespace, made)| {
        made.iter().map(move |p| async move {
            let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
            create(&policies, &object("NetworkPolicy", p.clone())?).await
        })
    });
    futures::future::try_join(
        futures::future::try_join_all(created),
        futures::future::try_join_all(made),
    )
    .await?;
    Ok(Some(Started {
        ns: ns.to_string(),
        client_node: a.clone(),
        server_node: b.clone(),
        early: early.into_iter().map(|(case, ..)| case).collect(),
    }))
}

/// The policy rows: the matrix where the network enforces policies (between the pods `start`
/// made), else one default-deny try between the test pods on the first two nodes.
pub(super) async fn network_policy(
    ctx: &Ctx,
    client: &Client,
    pods: &Api<Pod>,
    running: &[TestPod],
    matrix: Result<Option<Started>, String>,
    report: &mut Report,
) -> Result<(), String> {
    if !crate::cni::enforced(&ctx.cluster) {
        return default_deny_not_enforced(ctx, client, pods, running, report).await;
    }
    let started = match matrix {
        Ok(Some(s)) => s,
        Ok(None) => {
            report.rows.push(Row::skipped(
                "network-policy",
                "-",
                "needs test pods on two nodes",
            ));
            return Ok(());
        }
        Err(e) => {
            report.rows.push(
                Row::fail("network-policy", "-", &e).with_cause(Some(matrix_not_made(&e).into())),
            );
            return Ok(());
        }
    };
    let (a, b) = (&started.client_node, &started.server_node);
    let subject = format!("{} → {}", a.name, b.name);
    if !baseline(report, &subject) {
        return Ok(());
    }
    let dns_works = report
        .rows
        .iter()
        .any(|r| r.check == "dns" && r.outcome == Outcome::Pass)
        && !report
            .rows
            .iter()
            .any(|r| r.check == "dns" && r.outcome == Outcome::Fail);
    let dns_name = format!("kubernetes.default.svc.{}", ctx.cluster.dns_domain);
    let dns = dns_works.then_some(dns_name.as_str());
    let subnet = ctx.cluster.pod_subnet.to_string();
    // each case runs once its own pods are up, beside the others: no case's policies reach
    // another's pods (cases.rs)
    let (up, up_rx) = futures::channel::mpsc::unbounded::<(usize, Pods)>();
    let running = up_rx
        .map(|(i, pods)| {
            let case = cases::case(CASES[i].0, &pods, &subnet, dns);
            let made = started.early.contains(&case.name);
            async move { (i, run_case(ctx, client, &case, made).await) }
        })
        .buffer_unordered(CASES.len())
        .collect::<Vec<_>>();
    let (waited, mut done) = tokio::join!(wait_cases(client, &started, up), running);
    done.sort_by_key(|(i, _)| *i);
    for (_, rows) in done {
        report.rows.extend(rows?);
    }
    if let Err(NotUp { detail, unready }) = waited {
        // a probed pod runs under default-deny-ingress from the start: if it never turns
        // Ready, the engine drops its kubelet's probes
        let cause = match unready {
            Some(node) => format!(
                "the policy engine drops the kubelet's own traffic on {}: {}",
                node.name,
                crate::cni::policy_suspect(&ctx.cluster, &node)
            ),
            None => format!(
                "the runtime on {} or {}: `journalctl -u kubelet`",
                a.name, b.name
            ),
        };
        report
            .rows
            .push(Row::fail("network-policy", subject, detail).with_cause(Some(cause)));
    }
    Ok(())
}

/// Whether the test pods on the two nodes of `subject` reach each other without a policy; if
/// not, a row saying the policies were not checked.
fn baseline(report: &mut Report, subject: &str) -> bool {
    let reached = report
        .rows
        .iter()
        .any(|r| r.check == "pod-to-pod" && r.subject == subject && r.outcome == Outcome::Pass);
    if !reached {
        report.rows.push(Row::skipped(
            "network-policy",
            subject,
            "not checked: the pods do not reach each other without a policy",
        ));
    }
    reached
}

/// A network that does not enforce policies: one default-deny policy between the test pods on
/// the first two nodes, and a row saying whether it held.
async fn default_deny_not_enforced(
    ctx: &Ctx,
    client: &Client,
    pods: &Api<Pod>,
    running: &[TestPod],
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
    if !baseline(report, &subject) {
        return Ok(());
    }
    let ns = pods.namespace().unwrap_or_default();
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
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

/// A pod of the matrix that did not come up: why, and the node of a probed pod that runs but
/// is not Ready.
struct NotUp {
    detail: String,
    unready: Option<Host>,
}

impl std::convert::From<String> for NotUp {
    fn from(detail: String) -> Self {
        NotUp {
            detail,
            unready: None,
        }
    }
}

/// Waits for the matrix's pods, and sends each case's cast on `up` (its index in `CASES`) once
/// its five pods run (a probed one: is Ready), so that it need not wait for the others.
async fn wait_cases(
    client: &Client,
    started: &Started,
    up: futures::channel::mpsc::UnboundedSender<(usize, Pods)>,
) -> Result<(), NotUp> {
    let all: Api<Pod> = Api::all(client.clone());
    let listing = ListParams::default().labels(&format!("app={MATRIX_APP_LABEL}"));
    let begun = Instant::now();
    let is_up = |pod: &Pod, planned: &Planned| {
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running")
            && status.and_then(|s| s.pod_ip.as_ref()).is_some();
        running && (!planned.probed || is_ready(pod))
    };
    let cast_of = |(case, scope): (&'static str, cases::Scope)| {
        Part::ALL.map(|part| cases::placed(&started.ns, case, scope, part))
    };
    let mut sent = [false; CASES.len()];
    loop {
        let items = all
            .list(&listing)
            .await
            .map_err(|e| format!("listing the policy test pods: {e}"))?
            .items;
        let mut waiting = None;
        for (i, &case) in CASES.iter().enumerate() {
            if sent[i] {
                continue;
            }
            let planned = cast_of(case);
            match planned
                .iter()
                .find(|p| !find_pod(&items, p).is_some_and(|pod| is_up(pod, p)))
            {
                Some(w) => {
                    waiting.get_or_insert(w.clone());
                }
                None => {
                    let [server, client, peer, outsider, elsewhere] =
                        planned.map(|p| as_peer(started, &items, p));
                    let pods = Pods {
                        server: server?,
                        client: client?,
                        peer: peer?,
                        outsider: outsider?,
                        elsewhere: elsewhere?,
                    };
                    sent[i] = true;
                    // a closed receiver means the cases are no longer run: nothing to do
                    let _ = up.unbounded_send((i, pods));
                }
            }
        }
        let Some(w) = waiting else {
            crate::ssh::trace_mark("verify: policy pods ready");
            return Ok(());
        };
        let pod = find_pod(&items, &w);
        let phase = pod.and_then(|p| p.status.as_ref()?.phase.as_deref());
        if phase == Some("Failed") || begun.elapsed() > POD_WAIT {
            if w.probed && phase == Some("Running") {
                let node = started.node_of(&w);
                return Err(NotUp {
                    detail: format!(
                        "the policy test pod {}/{} runs but is not Ready after {} s: its readiness probe fails",
                        w.namespace,
                        w.name,
                        begun.elapsed().as_secs()
                    ),
                    unready: Some(node.clone()),
                });
            }
            return Err(NotUp::from(format!(
                "the policy test pod {}/{} is not running after {} s: {}",
                w.namespace,
                w.name,
                begun.elapsed().as_secs(),
                pod.map(super::workload::pending_reason)
                    .unwrap_or_else(|| "not created".into())
            )));
        }
        tokio::time::sleep(crate::api::poll_pause(begun)).await;
    }
}

/// The running pod `p` of the matrix, among `items`, as a case's peer.
fn as_peer(started: &Started, items: &[Pod], p: Planned) -> Result<Peer, String> {
    let ip = find_pod(items, &p)
        .and_then(|pod| pod.status.as_ref()?.pod_ip.clone())
        .ok_or_else(|| format!("internal: the policy test pod {} went missing", p.name))?;
    Ok(Peer {
        host: started.node_of(&p).clone(),
        name: p.name,
        namespace: p.namespace,
        ip,
    })
}

/// When `peer` last became Ready, if it is Ready.
async fn ready_since(client: &Client, peer: &Peer) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &peer.namespace);
    let pod = api.get(&peer.name).await.ok()?;
    let ready = pod
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .map_or_else(String::new, |t| t.0.to_string()),
    )
}

/// The planned pod `p` among `pods`.
fn find_pod<'a>(pods: &'a [Pod], p: &Planned) -> Option<&'a Pod> {
    pods.iter().find(|pod| {
        pod.metadata.namespace.as_deref() == Some(p.namespace.as_str())
            && pod.metadata.name.as_deref() == Some(p.name.as_str())
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

/// Applies a case's policies (unless `made` already), waits until every check sees what it
/// expects (or the policy wait runs out); a row per check.
async fn run_case(ctx: &Ctx, client: &Client, case: &Case, made: bool) -> Result<Vec<Row>, String> {
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &case.namespace);
    // the probed pod's Ready condition now: any flap under the policy changes its time
    let ready_before = match &case.kubelet_probe {
        Some(p) => ready_since(client, p).await,
        None => None,
    };
    if !made {
        for p in &case.policies {
            create(&policies, &object("NetworkPolicy", p.clone())?).await?;
        }
    }
    let started = Instant::now();
    let within = policy_wait(true);
    let mut seen: Vec<Option<bool>> = vec![None; case.checks.len()];
    // when the round began that saw the last check as expected: the policy held from then on
    let mut held_since = Instant::now();
    loop {
        let pending: Vec<usize> = (0..case.checks.len())
            .filter(|&i| seen[i] != Some(case.checks[i].allowed))
            .collect();
        if pending.is_empty() || started.elapsed() >= within {
            break;
        }
        held_since = Instant::now();
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
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let took = started.elapsed().as_secs_f32();
    crate::ssh::trace_mark(&format!("verify: policy case {} seen", case.name));
    let mut rows = Vec::new();
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
        rows.push(if *got == Some(check.allowed) {
            Row::pass("network-policy", subject, detail)
        } else {
            Row::fail("network-policy", subject, detail)
                .with_cause(Some(why_not_enforced(ctx, check).await))
        });
    }
    if let Some(probed) = &case.kubelet_probe {
        // a probe that fails once makes the pod unready until one passes. The policy held when
        // the round that saw it began (its refused requests were sent then); the first probe
        // sent after that went out within a period, and if dropped failed a timeout later
        tokio::time::sleep_until((held_since + probe_window()).into()).await;
        let now = ready_since(client, probed).await;
        let subject = format!(
            "{}: kubelet ({}) → {} readiness probe",
            case.name, probed.host.name, probed.name
        );
        let seen = match (&ready_before, &now) {
            (Some(before), Some(now)) if before == now => None,
            (_, Some(now)) => Some(format!("not Ready for a while (Ready again since {now})")),
            (_, None) => Some("not Ready".to_string()),
        };
        rows.push(match seen {
            None => Row::pass(
                "network-policy",
                subject,
                format!("{}: expected allowed, seen Ready throughout", case.name),
            ),
            Some(seen) => Row::fail(
                "network-policy",
                subject,
                format!("{}: expected allowed, seen {seen}", case.name),
            )
            .with_cause(Some(format!(
                "the policy engine drops the kubelet's own traffic on {}: {}",
                probed.host.name,
                crate::cni::policy_suspect(&ctx.cluster, &probed.host)
            ))),
        });
    }
    Ok(rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_not_made_is_told_apart_by_whether_the_api_server_answered() {
        let refused = kube::Error::Api(
            kube::core::Status::failure("admission webhook \"deny.example\" denied", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let why = matrix_not_made(&format!("creating pod verify-np-client: {refused}"));
        assert!(why.contains("admission webhook"), "{why}");
        let silent = "creating pod verify-np-client: HyperError: connection refused";
        assert!(matrix_not_made(silent).contains("did not answer"));
    }
}
