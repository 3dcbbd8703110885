//! The test workload: a namespace of its own, a Service, and a test pod on every node that can
//! run one (its runtime and kubelet up), waited for until Running; then the traffic, DNS, policy
//! and RuntimeClass rows between those pods.

use super::dns::dns;
use super::policy::network_policy;
use super::runtime_class::runtime_classes;
use super::traffic::{node_to_pod, pod_to_pod, pod_to_service};
use super::*;
use crate::ssh::{trace_mark, traced};

/// The test pods and every traffic check between them.
pub(super) async fn workload(
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
    trace_mark("verify: namespace created");
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
    let test_pods = usable
        .iter()
        .map(|h| test_pod(&pod_name(&h.name), &image, Some(&h.name), None))
        .collect::<Result<Vec<_>, _>>()?;
    futures::future::try_join_all(test_pods.iter().map(|pod| create_when_ready(&pods, pod)))
        .await?;
    trace_mark("verify: test pods created");
    // the policy matrix's pods start while the test pods' traffic is checked
    let (running, matrix) = tokio::join!(
        traced(
            "verify: test pods running",
            wait_running(
                &pods,
                &usable,
                crate::cni::of(ctx.cluster.cni).assigns_node_range(),
                report
            )
        ),
        traced(
            "verify: policy pods created",
            super::policy::start(ctx, client, ns, &usable, &image)
        )
    );
    if running.is_empty() {
        return Ok(());
    }
    let cluster_ip = services
        .get(SERVICE)
        .await
        .map_err(|e| e.to_string())?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    // at once, their rows in this order; but pods send to the Service only once pod-to-pod has
    // read the receivers' logs, where an untranslated request through the Service would hide a
    // translated direct one
    let ((to_pods, to_service), from_nodes, names) = tokio::join!(
        async {
            let to_pods = traced(
                "verify: pod-to-pod checked",
                pod_to_pod(ctx, &pods, &running),
            )
            .await;
            let to_service = pod_to_service(ctx, &pods, &running, &cluster_ip);
            (
                to_pods,
                traced("verify: pod-to-Service checked", to_service).await,
            )
        },
        traced("verify: node-to-pod checked", node_to_pod(ctx, &running)),
        traced(
            "verify: DNS checked",
            dns(ctx, client, &pods, &running, &cluster_ip)
        ),
    );
    report
        .rows
        .extend([to_pods, from_nodes, to_service, names].concat());
    network_policy(ctx, client, &pods, &running, matrix, report).await?;
    trace_mark("verify: NetworkPolicy checked");
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
pub(super) async fn test_image(ctx: &Ctx, host: &Host) -> Result<String, String> {
    let plan = ctx.bundle_plan().await?;
    if let Some(image) = plan.bundle_image(host, "busybox")? {
        return Ok(image);
    }
    let v = crate::catalog::default_version("busybox", &ctx.cluster.version)
        .unwrap_or_else(|| crate::catalog::BUSYBOX.into());
    Ok(format!("registry.k8s.io/e2e-test-images/busybox:{v}"))
}

/// A pod name from a node name (a DNS label: no dots, at most 63 characters).
pub(super) fn pod_name(node: &str) -> String {
    let mut n = format!("verify-{}", node.replace('.', "-"));
    n.truncate(63);
    n.trim_end_matches('-').to_string()
}

/// A typed API object from JSON built here; an error names the kind (and so the bug).
pub(super) fn object<T: serde::de::DeserializeOwned>(
    kind: &str,
    v: serde_json::Value,
) -> Result<T, String> {
    serde_json::from_value(v)
        .map_err(|e| format!("internal error: the {kind} verify builds is invalid: {e}"))
}

pub(super) fn service() -> Result<Service, String> {
    object(
        "Service",
        serde_json::json!({
            "metadata": {"name": SERVICE},
            "spec": {
                "selector": {"app": APP_LABEL},
                "ports": [{"port": SERVICE_PORT, "targetPort": POD_PORT, "protocol": "TCP"}],
            }
        }),
    )
}

/// A pod serving its own name; on `node` when given, tolerating every taint.
pub(super) fn test_pod(
    name: &str,
    image: &str,
    node: Option<&str>,
    runtime_class: Option<&str>,
) -> Result<Pod, String> {
    let mut labels = serde_json::json!({"app": APP_LABEL});
    if let Some(n) = node {
        labels["provision.io/node"] = n.into();
    }
    // a second port for the NetworkPolicy rows on ports (a named port, a range)
    let serve = format!(
        "mkdir -p /tmp/www && hostname > /tmp/www/index.html && httpd -p {ALT_PORT} -h /tmp/www && exec httpd -f -vv -p {POD_PORT} -h /tmp/www"
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
                "ports": [
                    {"name": "http", "containerPort": POD_PORT},
                    {"name": "alt", "containerPort": ALT_PORT},
                ],
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

pub(super) fn namespace_name() -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{NAMESPACE_PREFIX}{suffix}")
}

/// Deletes what interrupted runs left (in the background), then creates this run's namespace.
pub(super) async fn create_namespace(client: &Client, ns: &str) -> Result<(), String> {
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
pub(super) async fn create_when_ready(pods: &Api<Pod>, pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return Ok(()),
            Err(e)
                if started.elapsed() < Duration::from_secs(30)
                    && e.to_string().contains("serviceaccount") =>
            {
                tokio::time::sleep(crate::api::poll_pause(started)).await;
            }
            Err(e) => return Err(format!("creating pod {name}: {e}")),
        }
    }
}

/// Why a pod is not running yet, from its status.
pub(super) fn pending_reason(pod: &Pod) -> String {
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

fn failed(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Failed"))
}

/// What to look at when a test pod does not run on `node`.
fn likely_cause(pod: Option<&Pod>, node: &str) -> String {
    let evicted = pod.and_then(|p| p.status.as_ref()?.reason.as_deref()) == Some("Evicted");
    if evicted {
        format!(
            "{node} is short of disk or memory and the kubelet evicts pods: `kubectl describe node {node}`; free space, or lower spec.kubelet.evictionHard"
        )
    } else {
        format!("the runtime or CNI on {node}: `journalctl -u kubelet`")
    }
}

/// Waits for the test pods; a row per node. Returns those running, with their addresses: with
/// `node_ranges`, only those whose address lies in their node's pod range (one outside it got
/// another network than the cluster's, and its traffic rows would only blur that).
pub(super) async fn wait_running(
    pods: &Api<Pod>,
    nodes: &[Host],
    node_ranges: bool,
    report: &mut Report,
) -> Vec<TestPod> {
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
        // a failed pod (evicted, rejected at admission) never runs: no use waiting for it
        let settled = last.iter().filter(|p| running(p) || failed(p)).count();
        if settled == nodes.len() || started.elapsed() > POD_WAIT {
            break;
        }
        tokio::time::sleep(crate::api::poll_pause(started)).await;
    }
    let mut out = Vec::new();
    for h in nodes {
        let name = pod_name(&h.name);
        let pod = last
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&name));
        let status = pod.and_then(|p| p.status.clone()).unwrap_or_default();
        match (status.phase.as_deref(), status.pod_ip.clone()) {
            (Some("Running"), Some(ip))
                if node_ranges
                    && ip
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| !h.pod_cidr.contains(&a)) =>
            {
                report.rows.push(
                    Row::fail(
                        "pod",
                        &h.name,
                        format!(
                            "{name} runs at {ip}, outside {}'s pod range {}",
                            h.name, h.pod_cidr
                        ),
                    )
                    .with_cause(Some(format!(
                        "the runtime on {} gave it another network than the cluster's: it uses the first configuration by name in {}; `ls {}` there, and remove the one before the cluster's",
                        h.name,
                        crate::cni::NET_D,
                        crate::cni::NET_D
                    ))),
                );
            }
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
                        started.elapsed().as_secs().min(POD_WAIT.as_secs()),
                        pod.map(pending_reason)
                            .unwrap_or_else(|| "not created".into())
                    ),
                )
                .with_cause(Some(likely_cause(pod, &h.name))),
            ),
        }
    }
    out
}

/// Runs `checks` with bounded concurrency, keeping their order.
pub(super) async fn in_parallel<T, F: std::future::Future<Output = T>>(checks: Vec<F>) -> Vec<T> {
    futures::stream::iter(checks)
        .buffered(PARALLEL)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn an_evicted_pod_points_at_the_node_s_resources() -> R {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "verify-n1"},
            "status": {"phase": "Failed", "reason": "Evicted",
                       "message": "Pod was rejected: The node had condition: [DiskPressure]. "}
        }))?;
        assert!(failed(&pod));
        let cause = likely_cause(Some(&pod), "n1");
        assert!(
            cause.contains("kubectl describe node n1") && cause.contains("evictionHard"),
            "{cause}"
        );
        assert!(likely_cause(None, "n1").contains("runtime or CNI on n1"));
        Ok(())
    }

    #[test]
    fn pod_names_are_dns_labels() {
        assert_eq!(pod_name("node-1.example.com"), "verify-node-1-example-com");
        let long = pod_name(&"a".repeat(80));
        assert!(long.len() <= 63);
    }

    #[test]
    fn test_pods_tolerate_every_taint_and_stay_on_their_node() -> R {
        let p = test_pod("verify-n1", "busybox:1", Some("n1"), None)?;
        let spec = p.spec.ok_or("a pod without spec")?;
        assert_eq!(
            spec.tolerations.ok_or("no tolerations")?[0]
                .operator
                .as_deref(),
            Some("Exists")
        );
        assert_eq!(
            spec.node_selector.ok_or("no nodeSelector")?["kubernetes.io/hostname"],
            "n1"
        );
        let labels = p.metadata.labels.ok_or("no labels")?;
        assert_eq!(labels["provision.io/node"], "n1");
        assert_eq!(labels["app"], APP_LABEL);
        Ok(())
    }
}
