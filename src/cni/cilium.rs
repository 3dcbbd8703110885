//! Cilium: a VXLAN tunnel over the Nodes' pod CIDRs (kubernetes IPAM), beside kube-proxy, with
//! its eBPF policy engine on every node.

use super::{Cni, manifest_context};
use crate::catalog::CILIUM;
use crate::cluster::{Cluster, Host};
use crate::host::Leftovers;
use crate::render::render_typed;

pub struct Cilium;

impl Cni for Cilium {
    fn name(&self) -> &'static str {
        "cilium"
    }

    fn runs_as_pods(&self) -> bool {
        true
    }

    fn images(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cilium", format!("quay.io/cilium/cilium:v{CILIUM}")),
            (
                "cilium_operator",
                format!("quay.io/cilium/operator-generic:v{CILIUM}"),
            ),
        ]
    }

    fn manifest(&self, cluster: &Cluster) -> Result<Option<String>, String> {
        render_typed("cilium.yaml", &manifest_context(cluster, self)).map(Some)
    }

    fn config(&self) -> &'static str {
        "/etc/cni/net.d/05-cilium.conflist"
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            paths: vec![self.config().into()],
            links: vec!["cilium_vxlan".into(), "cilium_host".into()],
            chains: vec!["CILIUM_".into()],
            ..Leftovers::default()
        }
    }

    fn enforces_network_policy(&self) -> bool {
        true
    }

    fn suspect(&self, host: &Host) -> String {
        format!("the cilium agent pod on {}", host.name)
    }
}
