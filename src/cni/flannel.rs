//! Flannel: VXLAN between the nodes' pod CIDRs, no policy engine.

use super::{Cni, manifest_context};
use crate::catalog::{FLANNEL, FLANNEL_CNI_PLUGIN};
use crate::cluster::{Cluster, Host};
use crate::host::Leftovers;
use crate::render::render_typed;

pub struct Flannel;

impl Cni for Flannel {
    fn name(&self) -> &'static str {
        "flannel"
    }

    fn runs_as_pods(&self) -> bool {
        true
    }

    fn images(&self) -> Vec<(&'static str, String)> {
        vec![
            ("flannel", format!("ghcr.io/flannel-io/flannel:v{FLANNEL}")),
            (
                "flannel_cni_plugin",
                format!("ghcr.io/flannel-io/flannel-cni-plugin:v{FLANNEL_CNI_PLUGIN}"),
            ),
        ]
    }

    fn manifest(&self, cluster: &Cluster) -> Result<Option<String>, String> {
        render_typed("flannel.yaml", &manifest_context(cluster, self)).map(Some)
    }

    fn config(&self) -> &'static str {
        "/etc/cni/net.d/10-flannel.conflist"
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            paths: vec![self.config().into(), "/run/flannel".into()],
            links: vec!["flannel.1".into(), "cni0".into()],
            chains: vec!["FLANNEL-".into()],
            ..Leftovers::default()
        }
    }

    fn suspect(&self, host: &Host) -> String {
        format!("the kube-flannel pod on {}", host.name)
    }
}
