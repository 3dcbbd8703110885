//! Calico: VXLAN in its own IP pools (one block per node, the inventory's mask size), with its
//! policy engine (Felix) on every node.

use super::{Cni, manifest_context};
use crate::catalog::CALICO;
use crate::cluster::{Cluster, Host};
use crate::host::Leftovers;
use crate::render::render_typed;
use serde::Serialize;

pub struct Calico;

#[derive(Serialize)]
pub(crate) struct Crd {
    plural: &'static str,
    kind: &'static str,
    scope: &'static str,
}

/// Calico's resource types (group crd.projectcalico.org, version v1).
pub(crate) const CALICO_TYPES: &[(&str, &str, bool)] = &[
    ("bgpconfigurations", "BGPConfiguration", false),
    ("bgpfilters", "BGPFilter", false),
    ("bgppeers", "BGPPeer", false),
    ("blockaffinities", "BlockAffinity", false),
    ("caliconodestatuses", "CalicoNodeStatus", false),
    ("clusterinformations", "ClusterInformation", false),
    ("felixconfigurations", "FelixConfiguration", false),
    ("globalnetworkpolicies", "GlobalNetworkPolicy", false),
    ("globalnetworksets", "GlobalNetworkSet", false),
    ("hostendpoints", "HostEndpoint", false),
    ("ipamblocks", "IPAMBlock", false),
    ("ipamconfigs", "IPAMConfig", false),
    ("ipamhandles", "IPAMHandle", false),
    ("ippools", "IPPool", false),
    ("ipreservations", "IPReservation", false),
    (
        "kubecontrollersconfigurations",
        "KubeControllersConfiguration",
        false,
    ),
    ("networkpolicies", "NetworkPolicy", true),
    ("networksets", "NetworkSet", true),
    (
        "stagedglobalnetworkpolicies",
        "StagedGlobalNetworkPolicy",
        false,
    ),
    (
        "stagedkubernetesnetworkpolicies",
        "StagedKubernetesNetworkPolicy",
        true,
    ),
    ("stagednetworkpolicies", "StagedNetworkPolicy", true),
    ("tiers", "Tier", false),
];

impl Cni for Calico {
    fn name(&self) -> &'static str {
        "calico"
    }

    fn runs_as_pods(&self) -> bool {
        true
    }

    fn images(&self) -> Vec<(&'static str, String)> {
        vec![
            ("calico_node", format!("quay.io/calico/node:v{CALICO}")),
            ("calico_cni", format!("quay.io/calico/cni:v{CALICO}")),
            (
                "calico_kube_controllers",
                format!("quay.io/calico/kube-controllers:v{CALICO}"),
            ),
        ]
    }

    fn manifest(&self, cluster: &Cluster) -> Result<Option<String>, String> {
        let mut t = manifest_context(cluster, self);
        let crds: Vec<Crd> = CALICO_TYPES
            .iter()
            .map(|(plural, kind, namespaced)| Crd {
                plural,
                kind,
                scope: if *namespaced { "Namespaced" } else { "Cluster" },
            })
            .collect();
        t.crds = crds;
        render_typed("calico.yaml", &t).map(Some)
    }

    fn config(&self) -> &'static str {
        "/etc/cni/net.d/10-calico.conflist"
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            paths: vec![
                self.config().into(),
                "/etc/cni/net.d/calico-kubeconfig".into(),
            ],
            links: vec!["vxlan.calico".into()],
            chains: vec!["cali-".into()],
            ..Leftovers::default()
        }
    }

    fn assigns_node_range(&self) -> bool {
        false
    }

    fn enforces_network_policy(&self) -> bool {
        true
    }

    fn suspect(&self, host: &Host) -> String {
        format!("the calico-node pod on {}", host.name)
    }
}
