//! The last step of a node's upgrade: the Node reports the new kubelet and is Ready, then what
//! the upgrade's drain cordoned is uncordoned (a node the operator cordoned stays so).

use crate::api::client;
use crate::cluster::Host;
use crate::phases::reset::CORDONED_BY;
use crate::phases::step::{self, Applied, Step};
use crate::run::Ctx;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::time::{Duration, Instant};

/// How long a restarted kubelet may take to report its version and Ready.
const READY_WAIT: Duration = Duration::from_secs(120);

pub struct Uncordon;

/// The Node's kubelet version (`v1.37.2`) and whether it is Ready.
fn seen(node: &Node) -> (String, bool) {
    let status = node.status.as_ref();
    let version = status
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.clone())
        .unwrap_or_default();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    (version, ready)
}

/// Whether the upgrade's drain cordoned this Node.
pub fn cordoned_by_upgrade(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CORDONED_BY))
}

/// The Nodes an upgrade's drain cordoned and no uncordon undid yet (an interrupted run).
pub async fn cordoned_nodes(ctx: &Ctx) -> Result<Vec<String>, String> {
    let nodes: Api<Node> = Api::all(client(ctx, "admin").await?);
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing the Nodes: {e}"))?;
    Ok(list
        .items
        .iter()
        .filter(|n| cordoned_by_upgrade(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect())
}

/// Uncordons `host`'s Node if the upgrade cordoned it: whether it did.
pub async fn undo_cordon(ctx: &Ctx, host: &Host) -> Result<bool, String> {
    let nodes: Api<Node> = Api::all(client(ctx, "admin").await?);
    let Some(node) = nodes.get_opt(&host.name).await.map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    if !cordoned_by_upgrade(&node) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "metadata": {"annotations": {CORDONED_BY: null}},
        "spec": {"unschedulable": null}
    });
    nodes
        .patch(&host.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("uncordoning {}: {e}", host.name))?;
    Ok(true)
}

#[async_trait::async_trait]
impl Step for Uncordon {
    type Shared = ();

    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, ()>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        let nodes: Api<Node> = Api::all(client(ctx, "admin").await?);
        if let Some(node) = nodes.get_opt(&host.name).await.map_err(|e| e.to_string())?
            && cordoned_by_upgrade(&node)
        {
            after
                .changes
                .push(format!("would uncordon {} once Ready", host.name));
        }
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, ()>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        let nodes: Api<Node> = Api::all(client(ctx, "admin").await?);
        let want = format!("v{}", ctx.cluster.version);
        let started = Instant::now();
        loop {
            let node = nodes
                .get_opt(&host.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} is not a node of the cluster", host.name))?;
            let (version, ready) = seen(&node);
            if version == want && ready {
                break;
            }
            if started.elapsed() > READY_WAIT {
                let state = if cordoned_by_upgrade(&node) {
                    "it stays cordoned"
                } else {
                    "it was not cordoned by the upgrade"
                };
                return Err(format!(
                    "node {} reports kubelet {version}, Ready {ready}, after {} s (wanted {want}, Ready); {state}: `journalctl -u kubelet` on it",
                    host.name,
                    READY_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if undo_cordon(ctx, host).await? {
            after.changes.push(format!("uncordon {}", host.name));
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_upgrade_s_cordon_is_undone() -> Result<(), Box<dyn std::error::Error>> {
        let node = |annotations: serde_json::Value| -> Result<Node, serde_json::Error> {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n2", "annotations": annotations},
                "spec": {"unschedulable": true},
                "status": {"nodeInfo": {"kubeletVersion": "v1.37.2", "machineID": "", "systemUUID": "",
                    "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
                    "conditions": [{"type": "Ready", "status": "True"}]}
            }))
        };
        let ours = node(serde_json::json!({CORDONED_BY: "upgrade"}))?;
        assert!(cordoned_by_upgrade(&ours));
        assert_eq!(seen(&ours), ("v1.37.2".to_string(), true));
        assert!(!cordoned_by_upgrade(&node(
            serde_json::json!({"other": "x"})
        )?));
        Ok(())
    }
}
