//! `provision verify`: checks the cluster keeps Kubernetes' network rules, row by row. The API
//! and every node first; then a test pod on every node (the bundle's busybox, serving its own
//! name over HTTP) and traffic between them: pod to pod for every ordered pair of nodes (and
//! that the receiver saw the sender's own address: no NAT), node to pod, pod to a Service's
//! virtual IP, its DNS name, a NetworkPolicy, and a pod per RuntimeClass. Test objects live in
//! their own namespace, deleted afterwards.

pub mod cause;
pub mod probe;
pub mod report;

use crate::api;
use crate::cluster::Host;
use crate::cni::Cni;
use crate::run::Ctx;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use probe::{POD_PORT, url};
use report::{Outcome, Report, Row};
use std::time::{Duration, Instant};

/// Test namespaces are this plus a random suffix (no waiting for an earlier one to terminate),
/// and carry this label so leftovers of interrupted runs are found and deleted.
pub const NAMESPACE_PREFIX: &str = "provision-verify-";
pub const NAMESPACE_LABEL: &str = "provision.io/verify";
const SERVICE: &str = "verify";
const APP_LABEL: &str = "provision-verify";
/// How long test pods may take to run (images are local or pulled once).
const POD_WAIT: Duration = Duration::from_secs(180);
/// Probes in flight at once.
const PARALLEL: usize = 8;

/// Which inventory hosts must be nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every host (`provision verify`): one that is not a node is a failure.
    All,
    /// Those registered so far (the last phase of `init`, which brings up one host).
    Registered,
}

/// A test pod that runs, on its node.
#[derive(Clone)]
struct TestPod {
    host: Host,
    name: String,
    ip: String,
}

pub async fn run(ctx: &Ctx, expect: Expect) -> Result<Report, String> {
    let mut report = Report::default();
    let first = ctx
        .cluster
        .first_control_plane()
        .ok_or("the inventory has no control plane")?;
    let client = match api::client(ctx, "admin").await {
        Ok(c) => c,
        Err(e) => {
            report.rows.push(Row::fail("api", &first.name, e));
            return Ok(report);
        }
    };
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(text) if text.trim() == "ok" => {
            report
                .rows
                .push(Row::pass("api", &first.name, "/readyz: ok (etcd included)"))
        }
        Ok(text) => {
            report.rows.push(Row::fail(
                "api",
                &first.name,
                format!("/readyz: {}", text.trim()),
            ));
            return Ok(report);
        }
        Err(e) => {
            report.rows.push(
                Row::fail("api", &first.name, format!("/readyz: {e}")).with_cause(Some(format!(
                    "the API server on {} is not serving: `journalctl -u kube-apiserver`",
                    first.name
                ))),
            );
            return Ok(report);
        }
    }
    let nodes = check_nodes(ctx, &client, expect, &mut report).await?;
    check_control_planes(ctx, &client, &nodes, &mut report).await;

    let ns = namespace_name();
    let result = workload(ctx, &client, &nodes, &ns, &mut report).await;
    // the namespace goes whatever happened; its deletion finishes in the background
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    result?;
    Ok(report)
}

/// A row per inventory host: is it a Ready node? Returns the Ready ones.
async fn check_nodes(
    ctx: &Ctx,
    client: &Client,
    expect: Expect,
    report: &mut Report,
) -> Result<Vec<Host>, String> {
    let list = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing nodes: {e}"))?;
    let mut ready = Vec::new();
    for h in &ctx.cluster.hosts {
        let Some(node) = list
            .items
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(&h.name))
        else {
            if expect == Expect::All {
                report.rows.push(
                    Row::fail("node", &h.name, "not registered")
                        .with_cause(Some("run `provision join` to add it".into())),
                );
            }
            continue;
        };
        let status = node.status.clone().unwrap_or_default();
        let version = status
            .node_info
            .map(|i| i.kubelet_version)
            .unwrap_or_default();
        let cond = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        match cond {
            Some(c) if c.status == "True" => {
                report.rows.push(Row::pass(
                    "node",
                    &h.name,
                    format!("Ready, kubelet {version}"),
                ));
                ready.push(h.clone());
            }
            other => report.rows.push(
                Row::fail(
                    "node",
                    &h.name,
                    match other {
                        Some(c) => {
                            format!("Ready is {}: {}", c.status, c.message.unwrap_or_default())
                        }
                        None => "no Ready condition".into(),
                    },
                )
                .with_cause(Some(format!(
                    "the kubelet on {}: `journalctl -u kubelet`",
                    h.name
                ))),
            ),
        }
    }
    Ok(ready)
}

const CONTROL_PLANE_UNITS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Each control plane's units, and the leaders of the controller manager and the scheduler.
async fn check_control_planes(ctx: &Ctx, client: &Client, nodes: &[Host], report: &mut Report) {
    for h in nodes.iter().filter(|h| h.control_plane) {
        let script = format!("systemctl is-active {}", CONTROL_PLANE_UNITS.join(" "));
        let states = match ctx.session(h).await {
            Ok(s) => s.exec(&script, None).await.map(|o| o.stdout_text()),
            Err(e) => Err(e),
        };
        let row = match states {
            Ok(text) => {
                let down = cause::inactive(&CONTROL_PLANE_UNITS, &text);
                if down.is_empty() {
                    Row::pass(
                        "control-plane",
                        &h.name,
                        CONTROL_PLANE_UNITS.join(", ") + " active",
                    )
                } else {
                    let unit = down[0].split(' ').next().unwrap_or_default().to_string();
                    Row::fail("control-plane", &h.name, down.join("; ")).with_cause(Some(format!(
                        "`systemctl start {unit}` on {}, then `journalctl -u {unit}`",
                        h.name
                    )))
                }
            }
            Err(e) => Row::fail("control-plane", &h.name, e.to_string()),
        };
        report.rows.push(row);
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    for component in ["kube-controller-manager", "kube-scheduler"] {
        let row = match leases.get_opt(component).await {
            Ok(Some(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                let holder = spec.holder_identity.unwrap_or_default();
                let holder = holder.split('_').next().unwrap_or_default().to_string();
                let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
                let age = spec
                    .renew_time
                    .map(|t| k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second());
                match age {
                    Some(a) if a <= 2 * duration => Row::pass(
                        "leader",
                        component,
                        format!("held by {holder}, renewed {a} s ago"),
                    ),
                    Some(a) => Row::fail(
                        "leader",
                        component,
                        format!("held by {holder}, last renewed {a} s ago"),
                    )
                    .with_cause(Some(format!(
                        "{component} on {holder} stopped renewing its lease: `journalctl -u {component}`"
                    ))),
                    None => Row::fail("leader", component, "the lease was never renewed"),
                }
            }
            Ok(None) => Row::fail("leader", component, "no leader lease in kube-system")
                .with_cause(Some(format!("{component} is not running anywhere"))),
            Err(e) => Row::fail("leader", component, e.to_string()),
        };
        report.rows.push(row);
    }
}

/// The test pods and every traffic check between them.
async fn workload(
    ctx: &Ctx,
    client: &Client,
    nodes: &[Host],
    ns: &str,
    report: &mut Report,
) -> Result<(), String> {
    if nodes.is_empty() {
        report
            .rows
            .push(Row::skipped("pod", "-", "no node is Ready"));
        return Ok(());
    }
    let image = test_image(ctx, &nodes[0]).await?;
    create_namespace(client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(&PostParams::default(), &service()?)
        .await
        .map_err(|e| format!("creating the test Service: {e}"))?;
    // a node whose runtime or kubelet is stopped fails at once, instead of after POD_WAIT
    let down =
        futures::future::join_all(nodes.iter().map(|h| cause::node_units_down(ctx, h))).await;
    let mut usable = Vec::new();
    for (h, down) in nodes.iter().zip(down) {
        match down {
            Some(why) => report.rows.push(
                Row::fail("pod", &h.name, "no test pod: the node cannot run pods")
                    .with_cause(Some(why)),
            ),
            None => usable.push(h.clone()),
        }
    }
    for (i, h) in usable.iter().enumerate() {
        let pod = test_pod(&pod_name(&h.name), &image, Some(&h.name), i == 0, None)?;
        create_when_ready(&pods, &pod).await?;
    }
    let running = wait_running(&pods, &usable, report).await;
    if running.is_empty() {
        return Ok(());
    }
    pod_to_pod(ctx, &pods, &running, report).await;
    node_to_pod(ctx, &running, report).await;
    let cluster_ip = services
        .get(SERVICE)
        .await
        .map_err(|e| e.to_string())?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    pod_to_service(ctx, &pods, &running, &cluster_ip, report).await;
    dns(ctx, client, &pods, &running, &cluster_ip, report).await;
    network_policy(ctx, client, &pods, &running, report).await?;
    runtime_classes(
        client,
        &pods,
        &image,
        crate::runtime::of(ctx.cluster.runtime),
        report,
    )
    .await?;
    Ok(())
}

/// The bundle's busybox image, else the catalog's from the registry.
async fn test_image(ctx: &Ctx, host: &Host) -> Result<String, String> {
    let plan = ctx.bundle_plan().await?;
    if let Some(image) = plan.bundle_image(host, "busybox")? {
        return Ok(image);
    }
    let v = crate::catalog::default_version("busybox", &ctx.cluster.version)
        .unwrap_or_else(|| crate::catalog::BUSYBOX.into());
    Ok(format!("registry.k8s.io/e2e-test-images/busybox:{v}"))
}

/// A pod name from a node name (a DNS label: no dots, at most 63 characters).
fn pod_name(node: &str) -> String {
    let mut n = format!("verify-{}", node.replace('.', "-"));
    n.truncate(63);
    n.trim_end_matches('-').to_string()
}

/// A typed API object from JSON built here; an error names the kind (and so the bug).
fn object<T: serde::de::DeserializeOwned>(kind: &str, v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v)
        .map_err(|e| format!("internal error: the {kind} verify builds is invalid: {e}"))
}

fn service() -> Result<Service, String> {
    object(
        "Service",
        serde_json::json!({
            "metadata": {"name": SERVICE},
            "spec": {
                "selector": {"app": APP_LABEL},
                "ports": [{"port": 80, "targetPort": POD_PORT, "protocol": "TCP"}],
            }
        }),
    )
}

/// A pod serving its own name; on `node` when given, tolerating every taint.
fn test_pod(
    name: &str,
    image: &str,
    node: Option<&str>,
    client_role: bool,
    runtime_class: Option<&str>,
) -> Result<Pod, String> {
    let mut labels = serde_json::json!({"app": APP_LABEL});
    if let Some(n) = node {
        labels["provision.io/node"] = n.into();
    }
    if client_role {
        labels["provision.io/role"] = "client".into();
    }
    let serve = format!(
        "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -vv -p {POD_PORT} -h /tmp/www"
    );
    let mut pod = serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "containers": [{
                "name": "web",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", serve],
                "ports": [{"containerPort": POD_PORT}],
            }],
        }
    });
    if let Some(n) = node {
        pod["spec"]["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": n});
    }
    if let Some(rc) = runtime_class {
        pod["spec"]["runtimeClassName"] = rc.into();
    }
    object("Pod", pod)
}

fn namespace_name() -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{NAMESPACE_PREFIX}{suffix}")
}

/// Deletes what interrupted runs left (in the background), then creates this run's namespace.
async fn create_namespace(client: &Client, ns: &str) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let leftovers = namespaces
        .list(&ListParams::default().labels(NAMESPACE_LABEL))
        .await
        .map_err(|e| format!("listing namespaces: {e}"))?;
    for old in leftovers.items {
        if let Some(name) = old.metadata.name
            && old.metadata.deletion_timestamp.is_none()
        {
            let _ = namespaces.delete(&name, &DeleteParams::background()).await;
        }
    }
    let namespace: Namespace = object(
        "Namespace",
        serde_json::json!({
            "metadata": {"name": ns, "labels": {
                "app.kubernetes.io/managed-by": "provision",
                NAMESPACE_LABEL: "true",
            }}
        }),
    )?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(|e| format!("creating namespace {ns}: {e}"))?;
    Ok(())
}

/// Creates `pod`, waiting for the namespace's default ServiceAccount the admission needs.
async fn create_when_ready(pods: &Api<Pod>, pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return Ok(()),
            Err(e)
                if started.elapsed() < Duration::from_secs(30)
                    && e.to_string().contains("serviceaccount") =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("creating pod {name}: {e}")),
        }
    }
}

/// Why a pod is not running yet, from its status.
fn pending_reason(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some("Failed") {
        // e.g. Evicted: The node was low on resource: ephemeral-storage
        return format!(
            "Failed: {} {}",
            status.reason.unwrap_or_default(),
            status.message.unwrap_or_default()
        );
    }
    for cs in status.container_statuses.unwrap_or_default() {
        if let Some(w) = cs.state.and_then(|s| s.waiting) {
            return format!(
                "{}: {}",
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            );
        }
    }
    for c in status.conditions.unwrap_or_default() {
        if c.status != "True" && c.message.is_some() {
            return format!("{}: {}", c.type_, c.message.unwrap_or_default());
        }
    }
    status.phase.unwrap_or_else(|| "Pending".into())
}

/// Waits for the test pods; a row per node. Returns those running, with their addresses.
async fn wait_running(pods: &Api<Pod>, nodes: &[Host], report: &mut Report) -> Vec<TestPod> {
    let started = Instant::now();
    let mut last: Vec<Pod> = Vec::new();
    loop {
        if let Ok(list) = pods
            .list(&ListParams::default().labels("provision.io/node"))
            .await
        {
            last = list.items;
        }
        let running = |p: &Pod| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
        };
        if last.iter().filter(|p| running(p)).count() == nodes.len() || started.elapsed() > POD_WAIT
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut out = Vec::new();
    for h in nodes {
        let name = pod_name(&h.name);
        let pod = last
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&name));
        let status = pod.and_then(|p| p.status.clone()).unwrap_or_default();
        match (status.phase.as_deref(), status.pod_ip.clone()) {
            (Some("Running"), Some(ip)) => {
                report
                    .rows
                    .push(Row::pass("pod", &h.name, format!("{name} runs at {ip}")));
                out.push(TestPod {
                    host: h.clone(),
                    name,
                    ip,
                });
            }
            _ => report.rows.push(
                Row::fail(
                    "pod",
                    &h.name,
                    format!(
                        "{name} not running after {} s: {}",
                        POD_WAIT.as_secs(),
                        pod.map(pending_reason)
                            .unwrap_or_else(|| "not created".into())
                    ),
                )
                .with_cause(Some(format!(
                    "the runtime or CNI on {}: `journalctl -u kubelet`",
                    h.name
                ))),
            ),
        }
    }
    out
}

/// Runs `checks` with bounded concurrency, keeping their order.
async fn in_parallel<F: std::future::Future<Output = Row>>(checks: Vec<F>) -> Vec<Row> {
    futures::stream::iter(checks)
        .buffered(PARALLEL)
        .collect()
        .await
}

async fn pod_to_pod(ctx: &Ctx, pods: &Api<Pod>, running: &[TestPod], report: &mut Report) {
    if running.len() < 2 {
        report.rows.push(Row::skipped(
            "pod-to-pod",
            "-",
            "needs test pods on two nodes",
        ));
        return;
    }
    let mut checks = Vec::new();
    for a in running {
        for b in running.iter().filter(|b| b.name != a.name) {
            checks.push(async move {
                let subject = format!("{} → {}", a.host.name, b.host.name);
                let u = url(&b.ip, POD_PORT);
                match probe::fetch_from_pod(pods, &a.name, &u).await {
                    Ok(text) if text.trim() == b.name => {
                        Row::pass("pod-to-pod", subject, format!("{} → {u}: {}", a.ip, b.name))
                    }
                    Ok(text) => Row::fail(
                        "pod-to-pod",
                        subject,
                        format!(
                            "{} → {u}: answered by {:?}, not {}",
                            a.ip,
                            text.trim(),
                            b.name
                        ),
                    ),
                    Err(e) => Row::fail("pod-to-pod", subject, format!("{} → {u}: {e}", a.ip))
                        .with_cause(cause::unreachable_pod(ctx, &a.host, &b.host, &b.ip).await),
                }
            });
        }
    }
    let mut rows = in_parallel(checks).await;
    // no NAT: each receiver logged the sender's own pod address
    let mut logs = std::collections::HashMap::new();
    for p in running {
        let text = pods
            .logs(&p.name, &LogParams::default())
            .await
            .unwrap_or_default();
        logs.insert(p.host.name.clone(), text);
    }
    for row in rows.iter_mut().filter(|r| r.outcome == Outcome::Pass) {
        let (from, to) = row.subject.split_once(" → ").unwrap_or_default();
        let (Some(a), Some(log)) = (running.iter().find(|p| p.host.name == from), logs.get(to))
        else {
            continue;
        };
        if seen_from(log, &a.ip) {
            row.detail
                .push_str(&format!(" (seen from {}: no NAT)", a.ip));
        } else {
            row.outcome = Outcome::Fail;
            row.detail.push_str(&format!(
                "; but the request did not arrive from {}: it was translated on the way",
                a.ip
            ));
            row.cause = Some(format!(
                "a masquerade rule on {from} applies to pod traffic: `iptables -t nat -S POSTROUTING` there"
            ));
        }
    }
    report.rows.extend(rows);
}

/// Whether busybox httpd's log (`[::ffff:10.88.0.3]:41234: url:/`) has a request from `ip`.
fn seen_from(log: &str, ip: &str) -> bool {
    log.lines().any(|l| {
        l.starts_with(&format!("[::ffff:{ip}]:"))
            || l.starts_with(&format!("[{ip}]:"))
            || l.starts_with(&format!("{ip}:"))
    })
}

async fn node_to_pod(ctx: &Ctx, running: &[TestPod], report: &mut Report) {
    let mut checks = Vec::new();
    for a in running {
        for b in running {
            checks.push(async move {
                let subject = format!("{} → {}", a.host.name, b.host.name);
                let reply = match ctx.session(&a.host).await {
                    Ok(s) => probe::fetch_from_node(&s, &b.ip, POD_PORT).await,
                    Err(e) => Err(e.to_string()),
                };
                let target = format!("{}:{POD_PORT}", b.ip);
                match reply {
                    Ok(text) if text.trim() == b.name => {
                        Row::pass("node-to-pod", subject, format!("{target}: {}", b.name))
                    }
                    Ok(text) => Row::fail(
                        "node-to-pod",
                        subject,
                        format!("{target}: answered {:?}, not {}", text.trim(), b.name),
                    ),
                    Err(e) => Row::fail("node-to-pod", subject, format!("{target}: {e}"))
                        .with_cause(cause::unreachable_pod(ctx, &a.host, &b.host, &b.ip).await),
                }
            });
        }
    }
    report.rows.extend(in_parallel(checks).await);
}

async fn pod_to_service(
    ctx: &Ctx,
    pods: &Api<Pod>,
    running: &[TestPod],
    cluster_ip: &str,
    report: &mut Report,
) {
    let u = url(cluster_ip, 80);
    let checks = running.iter().map(|a| {
        let u = u.clone();
        async move {
            let subject = format!("{} → {SERVICE}", a.host.name);
            match probe::fetch_from_pod(pods, &a.name, &u).await {
                Ok(text) if running.iter().any(|p| p.name == text.trim()) => Row::pass(
                    "pod-to-service",
                    subject,
                    format!("{u} (ClusterIP): answered by {}", text.trim()),
                ),
                Ok(text) => Row::fail(
                    "pod-to-service",
                    subject,
                    format!("{u}: answered {:?}, not a test pod", text.trim()),
                ),
                Err(e) => Row::fail("pod-to-service", subject, format!("{u} (ClusterIP): {e}"))
                    .with_cause(cause::unreachable_service(ctx, &a.host, cluster_ip).await),
            }
        }
    });
    report.rows.extend(in_parallel(checks.collect()).await);
}

/// How long verify waits for CoreDNS to become ready (it may have been deployed by the same run).
const DNS_READY_WITHIN: Duration = Duration::from_secs(90);

/// Why CoreDNS cannot answer yet, or None once the kube-dns Service has a ready endpoint.
/// Waits while its pods are starting; a Deployment scaled to 0 is named at once.
async fn coredns_unready(client: &Client) -> Option<(String, String)> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let by_service = ListParams::default().labels("kubernetes.io/service-name=kube-dns");
    let started = Instant::now();
    loop {
        let replicas = deployments
            .get_opt("coredns")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.spec.replicas);
        if replicas == Some(0) {
            return Some((
                "the kube-dns Service has no endpoints: CoreDNS is scaled to 0".into(),
                "CoreDNS has no pods (deployment kube-system/coredns has 0 replicas): `kubectl -n kube-system scale deployment coredns --replicas=2`".into(),
            ));
        }
        let ready = slices.list(&by_service).await.ok().is_some_and(|l| {
            l.items.iter().any(|s| {
                s.endpoints
                    .iter()
                    .flatten()
                    .any(|e| e.conditions.as_ref().is_none_or(|c| c.ready != Some(false)))
            })
        });
        if ready {
            return None;
        }
        if started.elapsed() > DNS_READY_WITHIN {
            return Some((
                format!(
                    "the kube-dns Service has no ready endpoints after {} s",
                    DNS_READY_WITHIN.as_secs()
                ),
                "CoreDNS pods are not ready: `kubectl -n kube-system get pods -l k8s-app=kube-dns` and their logs".into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// DNS through CoreDNS from every test pod: the test Service's full name, the API server's
/// (`kubernetes.default.svc.<domain>`), and the test Service's short name through the pod's
/// search path.
async fn dns(
    ctx: &Ctx,
    client: &Client,
    pods: &Api<Pod>,
    running: &[TestPod],
    cluster_ip: &str,
    report: &mut Report,
) {
    let ns = pods.namespace().unwrap_or_default();
    let domain = &ctx.cluster.dns_domain;
    let api_ip = ctx.cluster.api_service_ip.to_string();
    // (name, the address it must resolve to, through the search path)
    let names = [
        (
            format!("{SERVICE}.{ns}.svc.{domain}"),
            cluster_ip.to_string(),
            false,
        ),
        (format!("kubernetes.default.svc.{domain}"), api_ip, false),
        (SERVICE.to_string(), cluster_ip.to_string(), true),
    ];
    let system_services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    match system_services.get_opt("kube-dns").await {
        Ok(Some(_)) => {}
        Ok(None) => {
            report.rows.push(Row::skipped(
                "dns",
                &names[0].0,
                "not checked: CoreDNS is not deployed (no kube-dns Service; `provision init` said why)",
            ));
            return;
        }
        Err(e) => {
            report
                .rows
                .push(Row::fail("dns", &names[0].0, e.to_string()));
            return;
        }
    }
    if let Some((detail, cause)) = coredns_unready(client).await {
        report
            .rows
            .push(Row::fail("dns", &names[0].0, detail).with_cause(Some(cause)));
        return;
    }
    let checks = running.iter().flat_map(|a| {
        names.iter().map(move |(name, want, search)| async move {
            let (subject, lookup) = if *search {
                (
                    format!("{} → {name} (search path)", a.host.name),
                    probe::resolve_from_pod(pods, &a.name, name).await,
                )
            } else {
                (
                    format!("{} → {name}", a.host.name),
                    probe::lookup_from_pod(pods, &a.name, name).await,
                )
            };
            let resolved = |text: &str| {
                if *search {
                    ping_resolved(text, want)
                } else {
                    answers(text, want)
                }
            };
            match lookup {
                Ok(text) if resolved(&text) => {
                    Row::pass("dns", subject, format!("resolves to {want}"))
                }
                Ok(text) => Row::fail(
                    "dns",
                    subject,
                    format!(
                        "resolves, but not to {want}: {}",
                        text.split_whitespace().collect::<Vec<_>>().join(" ")
                    ),
                ),
                Err(e) => Row::fail("dns", subject, format!("lookup: {e}")).with_cause(
                    cause::unreachable_service(
                        ctx,
                        &a.host,
                        &ctx.cluster.dns_service_ip.to_string(),
                    )
                    .await,
                ),
            }
        })
    });
    report.rows.extend(in_parallel(checks.collect()).await);
}

/// Whether ping's first line (`PING verify (10.96.12.7): 56 data bytes`) names `ip`.
fn ping_resolved(ping: &str, ip: &str) -> bool {
    ping.contains(&format!("({ip})"))
}

/// Whether nslookup's output gives `ip` as an answer (not only as the server it asked).
fn answers(nslookup: &str, ip: &str) -> bool {
    nslookup
        .split("Name:")
        .skip(1)
        .any(|answer| answer.split_whitespace().any(|w| w == ip))
}

/// How long a default-deny policy may take to apply: an enforcing network programs it within
/// seconds; one that does not enforce policies is given a moment, then reported as such.
fn policy_wait(cni: &dyn Cni) -> u64 {
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
async fn until(pods: &Api<Pod>, from: &str, u: &str, want_answer: bool, within: Duration) -> bool {
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
async fn network_policy(
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

/// A pod under every RuntimeClass the cluster has.
async fn runtime_classes(
    client: &Client,
    pods: &Api<Pod>,
    image: &str,
    runtime: &dyn crate::runtime::Runtime,
    report: &mut Report,
) -> Result<(), String> {
    let classes = Api::<RuntimeClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing RuntimeClasses: {e}"))?;
    for rc in classes.items {
        let name = rc.metadata.name.clone().unwrap_or_default();
        let pod_name = format!("verify-rc-{name}");
        create_when_ready(pods, &test_pod(&pod_name, image, None, false, Some(&name))?).await?;
        let started = Instant::now();
        let row = loop {
            let pod = pods.get(&pod_name).await.map_err(|e| e.to_string())?;
            let status = pod.status.clone().unwrap_or_default();
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if status.phase.as_deref() == Some("Running") {
                let running = format!("{pod_name} runs under handler {} on {node}", rc.handler);
                break match rc.handler.as_str() {
                    // Running proves little: the pod's kernel must be gVisor's, not the host's
                    "runsc" => match probe::exec(pods, &pod_name, "dmesg").await {
                        Ok(log) if is_gvisor_kernel_log(&log) => Row::pass(
                            "runtime-class",
                            &name,
                            format!("{running}, in a gVisor sandbox (its kernel log)"),
                        ),
                        Ok(_) => Row::fail(
                            "runtime-class",
                            &name,
                            format!("{running}, but its kernel is the host's, not gVisor's"),
                        )
                        .with_cause(Some(format!(
                            "handler {} on {node} does not run runsc: check the runtime's configuration",
                            rc.handler
                        ))),
                        Err(e) => Row::fail(
                            "runtime-class",
                            &name,
                            format!("{running}; its kernel log could not be read: {e}"),
                        ),
                    },
                    _ => Row::pass("runtime-class", &name, running),
                };
            }
            if started.elapsed() > Duration::from_secs(60) {
                break Row::fail(
                    "runtime-class",
                    &name,
                    format!(
                        "{pod_name} not running after 60 s: {}",
                        pending_reason(&pod)
                    ),
                )
                .with_cause(Some(format!(
                    "the runtime on {} has no working handler {}: check {} and `journalctl -u {}`",
                    if node.is_empty() { "the node" } else { &node },
                    rc.handler,
                    runtime.config(),
                    runtime.service()
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        report.rows.push(row);
    }
    Ok(())
}

/// gVisor's kernel writes its own boot log (`Starting gVisor...`); a container on the host's
/// kernel sees the host's log, or none.
fn is_gvisor_kernel_log(dmesg: &str) -> bool {
    dmesg.lines().any(|l| l.contains("Starting gVisor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gvisor_s_own_kernel_log_proves_the_sandbox() {
        let gvisor = "[    0.000000] Starting gVisor...\n[    0.400000] Reticulating splines...\n";
        assert!(is_gvisor_kernel_log(gvisor));
        assert!(!is_gvisor_kernel_log(
            "[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)\n"
        ));
        assert!(!is_gvisor_kernel_log(""));
    }

    #[test]
    fn the_search_path_lookup_counts_only_the_address_ping_resolved() {
        let out = "PING verify (10.101.59.26): 56 data bytes";
        assert!(ping_resolved(out, "10.101.59.26"));
        assert!(!ping_resolved(out, "10.101.59.2"));
        assert!(!ping_resolved("ping: bad address 'verify'", "10.101.59.26"));
    }

    #[test]
    fn an_answer_counts_only_below_the_name_not_as_the_server() {
        let out = "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\nName:\tverify.ns.svc.cluster.local\nAddress: 10.101.59.26\n";
        assert!(answers(out, "10.101.59.26"));
        assert!(!answers(out, "10.96.0.10"));
        assert!(!answers(
            "Server: 10.96.0.10\n** server can't find verify: NXDOMAIN\n",
            "10.96.0.10"
        ));
    }

    #[test]
    fn pod_names_are_dns_labels() {
        assert_eq!(pod_name("node-1.example.com"), "verify-node-1-example-com");
        let long = pod_name(&"a".repeat(80));
        assert!(long.len() <= 63);
    }

    #[test]
    fn the_sender_is_found_in_the_httpd_log_only_by_its_own_address() {
        let log = "[::ffff:10.88.0.3]:41234: url:/\n[::ffff:10.88.0.3]:41234: response:200\n";
        assert!(seen_from(log, "10.88.0.3"));
        assert!(!seen_from(log, "10.88.0.31"));
        assert!(!seen_from(log, "10.244.0.20"));
    }

    #[test]
    fn test_pods_tolerate_every_taint_and_stay_on_their_node() {
        let p = test_pod("verify-n1", "busybox:1", Some("n1"), true, None).unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(
            spec.tolerations.unwrap()[0].operator.as_deref(),
            Some("Exists")
        );
        assert_eq!(spec.node_selector.unwrap()["kubernetes.io/hostname"], "n1");
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels["provision.io/role"], "client");
        assert_eq!(labels["app"], APP_LABEL);
    }
}
