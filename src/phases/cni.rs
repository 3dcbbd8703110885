//! The `cni` phase: what the cluster's pod network needs on every node (`crate::cni`): the
//! built-in network's plugins, overlay and routes, or only the configuration directory for a
//! network that runs as pods (the addons phase applies those).

use super::Phase;
use super::step::{Desired, Step};
use crate::cluster::{Cluster, Host};
use crate::cni;
use crate::host::probe::{Observed, Probe};

pub fn phase() -> Phase {
    Phase::step(
        "cni",
        "pod network: bridge plugin with the node's pod CIDR, routes to the other nodes",
        Cni,
    )
}

pub(crate) struct Cni;

impl Step for Cni {
    type Shared = ();

    /// On `join`, every node of the inventory: the others learn the routes to the new ones.
    fn every_node_on_join(&self) -> bool {
        true
    }

    fn probes(&self, cluster: &Cluster, _: &Host) -> Vec<Probe> {
        cni::of(cluster.cni).probes(cluster)
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        cni::of(cluster.cni)
            .node_actions(cluster, host, observed)
            .map(Desired::from)
    }
}
