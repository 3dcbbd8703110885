//! A pod per RuntimeClass, and proof that the sandbox ran it (gVisor's own kernel log).

use super::workload::{create_when_ready, pending_reason, test_pod};
use super::*;

/// A pod under every RuntimeClass the cluster has.
pub(super) async fn runtime_classes(
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
        create_when_ready(pods, &test_pod(&pod_name, image, None, Some(&name))?).await?;
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
pub(super) fn is_gvisor_kernel_log(dmesg: &str) -> bool {
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
}
