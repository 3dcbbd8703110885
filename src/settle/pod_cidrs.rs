//! The pod CIDRs the cluster's Nodes hold, read through the API at the start of a run and kept
//! (`Cluster::keep_pod_cidrs`): the inventory's order gives a new cluster its blocks, the Nodes
//! keep them afterwards.

use crate::run::Ctx;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use std::collections::BTreeMap;
use std::time::Duration;

/// A cluster not made yet (no admin.conf on the seed) or whose API does not answer within this
/// has no Nodes to read: the inventory's blocks stand, and the phases that need the API say why.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Each Node's `spec.podCIDR`, by name; None when the API cannot be read.
async fn held(ctx: &Ctx) -> Option<BTreeMap<String, IpNet>> {
    let client = crate::api::client(ctx, "admin").await.ok()?;
    let nodes: Api<Node> = Api::all(client);
    let list = tokio::time::timeout(READ_TIMEOUT, nodes.list(&Default::default()))
        .await
        .ok()?
        .ok()?;
    Some(
        list.items
            .into_iter()
            .filter_map(|n| {
                let cidr = n.spec?.pod_cidr?.parse().ok()?;
                Some((n.metadata.name?, cidr))
            })
            .collect(),
    )
}

/// Gives the run's hosts the blocks their Nodes hold; the hosts that moved are said once.
pub async fn keep(ctx: &mut Ctx) -> Result<(), String> {
    let Some(held) = held(ctx).await else {
        return Ok(());
    };
    let moved = std::sync::Arc::make_mut(&mut ctx.cluster).keep_pod_cidrs(&held)?;
    for name in moved {
        if let Some(h) = ctx.cluster.host(&name) {
            eprintln!(
                "note: {name} keeps pod CIDR {} (its Node's, or the first free block), not the one the inventory's order gives it; set its podCIDR in the inventory to say so there",
                h.pod_cidr
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    fn cluster(hosts: &[&str]) -> crate::cluster::Cluster {
        let mut text = String::from(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata:\n  name: t\nspec:\n  networking:\n    podSubnet: 10.88.0.0/16\n  hosts:\n",
        );
        for (i, h) in hosts.iter().enumerate() {
            let role = if h.starts_with("cp") {
                "control-plane"
            } else {
                "worker"
            };
            text.push_str(&format!(
                "    - {{name: {h}, address: 10.0.0.{}, roles: [{role}]}}\n",
                i + 1
            ));
        }
        crate::cluster::from_text(&text)
    }

    fn blocks(c: &crate::cluster::Cluster) -> Vec<String> {
        c.hosts
            .iter()
            .map(|h| format!("{} {}", h.name, h.pod_cidr))
            .collect()
    }

    fn held(pairs: &[(&str, &str)]) -> Result<BTreeMap<String, ipnet::IpNet>, String> {
        pairs
            .iter()
            .map(|(n, c)| Ok((n.to_string(), c.parse().map_err(|e| format!("{c}: {e}"))?)))
            .collect()
    }

    #[test]
    fn nodes_keep_their_blocks_when_a_host_leaves_the_inventory() -> Result<(), String> {
        // cp1 (10.88.0.0/24) was reset and removed; cp4 replaces it at the end
        let mut c = cluster(&["cp2", "cp3", "w1", "cp4"]);
        assert_eq!(
            blocks(&c),
            [
                "cp2 10.88.0.0/24",
                "cp3 10.88.1.0/24",
                "w1 10.88.2.0/24",
                "cp4 10.88.3.0/24"
            ]
        );
        let nodes = held(&[
            ("cp2", "10.88.1.0/24"),
            ("cp3", "10.88.2.0/24"),
            ("w1", "10.88.3.0/24"),
        ])?;
        let moved = c.keep_pod_cidrs(&nodes)?;
        assert_eq!(
            blocks(&c),
            [
                "cp2 10.88.1.0/24",
                "cp3 10.88.2.0/24",
                "w1 10.88.3.0/24",
                "cp4 10.88.0.0/24"
            ]
        );
        assert_eq!(moved, ["cp2", "cp3", "w1", "cp4"]);
        Ok(())
    }

    #[test]
    fn a_newcomer_keeps_its_block_unless_a_node_holds_it() -> Result<(), String> {
        // w2 added in the middle: its block (10.88.1.0/24) is w1's Node's
        let mut c = cluster(&["cp1", "w2", "w1"]);
        let nodes = held(&[("cp1", "10.88.0.0/24"), ("w1", "10.88.1.0/24")])?;
        let moved = c.keep_pod_cidrs(&nodes)?;
        assert_eq!(
            blocks(&c),
            ["cp1 10.88.0.0/24", "w2 10.88.2.0/24", "w1 10.88.1.0/24"]
        );
        assert_eq!(moved, ["w1", "w2"]);
        // nothing moves when the inventory and the Nodes agree
        let mut same = cluster(&["cp1", "w1"]);
        assert!(same.keep_pod_cidrs(&nodes)?.is_empty());
        Ok(())
    }

    #[test]
    fn a_node_gone_from_the_inventory_keeps_its_block_taken() -> Result<(), String> {
        let mut c = cluster(&["cp1", "w9"]);
        // w1 is still a Node with the block the inventory's order gives w9
        let nodes = held(&[("cp1", "10.88.0.0/24"), ("w1", "10.88.1.0/24")])?;
        c.keep_pod_cidrs(&nodes)?;
        assert_eq!(blocks(&c), ["cp1 10.88.0.0/24", "w9 10.88.2.0/24"]);
        Ok(())
    }

    #[test]
    fn no_free_block_is_an_error_that_says_what_to_do() -> Result<(), String> {
        let mut c = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata:\n  name: t\nspec:\n  networking:\n    podSubnet: 10.88.0.0/23\n  hosts:\n    - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n    - {name: w2, address: 10.0.0.2, roles: [worker]}\n",
        );
        let nodes = held(&[("cp1", "10.88.0.0/24"), ("w1", "10.88.1.0/24")])?;
        let err = c
            .keep_pod_cidrs(&nodes)
            .err()
            .ok_or("a block was given where none is free")?;
        assert!(
            err.contains("no free /24 block of the pod subnet 10.88.0.0/23 for w2"),
            "{err}"
        );
        assert!(
            err.contains("delete the Nodes of hosts that are gone"),
            "{err}"
        );
        Ok(())
    }
}
