//! The rows about the cluster itself: the API server answers, every node is Ready with a kubelet
//! that serves, and every control plane's units run and its components hold their leases.

use super::*;

/// A row per inventory host: is it a Ready node? Returns the Ready ones.
pub(super) async fn check_nodes(
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

pub(super) const CONTROL_PLANE_UNITS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Each control plane's units, and the leaders of the controller manager and the scheduler.
pub(super) async fn check_control_planes(
    ctx: &Ctx,
    client: &Client,
    nodes: &[Host],
    report: &mut Report,
) {
    for h in nodes.iter().filter(|h| h.control_plane) {
        let script = cause::settled_states(&CONTROL_PLANE_UNITS);
        let states = match ctx.session(h).await {
            Ok(s) => s.exec(&script, None).await.map(|o| o.stdout_text()),
            Err(e) => Err(e),
        };
        let row = match states {
            Ok(text) => {
                let down = cause::inactive(&CONTROL_PLANE_UNITS, &text);
                match down.first() {
                    None => Row::pass(
                        "control-plane",
                        &h.name,
                        CONTROL_PLANE_UNITS.join(", ") + " active",
                    ),
                    Some(first) => {
                        let unit = &first.unit;
                        let advice = if first.restarting() {
                            format!(
                                "{unit} keeps restarting: `journalctl -u {unit}` on {} says why it exits",
                                h.name
                            )
                        } else {
                            format!(
                                "`systemctl start {unit}` on {}, then `journalctl -u {unit}`",
                                h.name
                            )
                        };
                        Row::fail("control-plane", &h.name, cause::listed(&down, "; "))
                            .with_cause(Some(advice))
                    }
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
