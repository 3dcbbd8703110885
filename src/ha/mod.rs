//! An API endpoint the control planes serve themselves (`controlPlaneEndpoint: {vip: ...}`):
//! a VIP that keepalived (VRRP) keeps on one control plane whose API server is ready, and on
//! every node an haproxy on loopback that spreads the node's own agents (kubelet, kube-proxy,
//! the policy engine) over every ready API server, so that they do not wait for the VIP to move.
//!
//! Both engines are the hosts' distribution packages, not bundle components: their projects
//! publish source only, and their binaries link the system's libraries (OpenSSL, libnl). The
//! preflight names the missing ones with the command that installs them. (kube-vip, the engine
//! that would ship as one binary, cannot be had here; see docs/ARCHITECTURE.md.)

pub mod api_proxy;
pub mod vip;

use crate::cluster::Cluster;
use crate::host::Leftovers;

/// Whether the cluster runs its own endpoint.
pub fn enabled(cluster: &Cluster) -> bool {
    cluster.endpoint.vip.is_some()
}

/// What the two leave on a host; reset removes it whatever the inventory says now.
pub fn leftovers() -> Leftovers {
    Leftovers {
        units: vec![vip::SERVICE.into(), api_proxy::SERVICE.into()],
        paths: vec![
            vip::UNIT.into(),
            vip::DIR.into(),
            api_proxy::UNIT.into(),
            api_proxy::DIR.into(),
        ],
        ..Leftovers::default()
    }
}
