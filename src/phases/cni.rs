//! The `cni` phase, built-in network: the upstream bridge, host-local, portmap and loopback
//! plugins with the node's pod CIDR, and a VXLAN overlay to every other node's pod CIDR
//! (forwarding entries and routes programmed from the inventory; or, with `overlay: none`, plain
//! routes through the nodes' addresses), kept by a unit so it comes back after a reboot.
//! Pod-to-pod traffic keeps its addresses; traffic leaving the pod range is masqueraded.

use super::step::{Desired, Step};
use super::{Phase, Work};
use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, UnitSpec};
use crate::inventory::{CniName, Overlay};
use crate::render::render;
use serde::Serialize;

pub const CONFLIST: &str = "/etc/cni/net.d/10-provision.conflist";
pub const ROUTES_SCRIPT: &str = "/usr/local/lib/provision/pod-routes.sh";
pub const ROUTES_UNIT: &str = "/etc/systemd/system/provision-pod-routes.service";

pub fn phase() -> Phase {
    Phase {
        name: "cni",
        summary: "pod network: bridge plugin with the node's pod CIDR, routes to the other nodes",
        work: Work::Step(Box::new(Cni)),
        children: Vec::new(),
    }
}

struct Cni;

/// The overlay device on every node.
pub const VXLAN_DEVICE: &str = "provision-vx";

#[derive(Serialize)]
struct Peer {
    /// The peer's pod CIDR, routed to it.
    cidr: String,
    /// The peer's node address (VXLAN endpoint, or next hop without an overlay).
    address: String,
    /// The peer's overlay address and MAC (derived from its pod CIDR).
    vx_addr: String,
    mac: String,
}

/// A node's overlay address (its pod CIDR's network address) and the MAC derived from it, so
/// every node knows every other's without asking.
fn overlay_identity(host: &Host) -> Result<(String, String), String> {
    match host.pod_cidr.network() {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            Ok((
                a.to_string(),
                format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            ))
        }
        std::net::IpAddr::V6(_) => {
            Err("the VXLAN overlay is for IPv4 pod subnets: set spec.cni.overlay: none".into())
        }
    }
}

/// Whether the node carries the built-in VXLAN overlay (its uplink is then probed).
fn overlay(cluster: &Cluster) -> bool {
    cluster.cni == CniName::Builtin && cluster.overlay == Overlay::Vxlan
}

/// The overlay is kernel state the files do not show: when its link or a route to a peer is
/// gone (deleted by hand, lost to a network restart), restarting the unit puts it back.
fn restore_overlay(peers: usize) -> Action {
    Action::Exec {
        label: format!("restore the overlay ({VXLAN_DEVICE} up with routes to {peers} peer(s))"),
        cmd: "systemctl restart provision-pod-routes.service".into(),
        unless: format!(
            "ip link show {VXLAN_DEVICE} up 2>/dev/null | grep -q {VXLAN_DEVICE} && [ \"$(ip route show dev {VXLAN_DEVICE} 2>/dev/null | grep -c onlink)\" -ge {peers} ]"
        ),
    }
}

#[async_trait::async_trait]
impl Step for Cni {
    type Shared = ();

    /// On `join`, every node of the inventory: the others learn the routes to the new ones.
    fn every_node_on_join(&self) -> bool {
        true
    }

    fn probes(&self, cluster: &Cluster, _: &Host) -> Vec<Probe> {
        if overlay(cluster) {
            vec![Probe::Uplink]
        } else {
            Vec::new()
        }
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        if cluster.cni != CniName::Builtin {
            // the CNI's own pods write their configuration (the addons phase applies them)
            return Ok(vec![Action::dir("/etc/cni/net.d", 0o755)].into());
        }
        let gateway =
            host.pod_cidr.hosts().next().ok_or_else(|| {
                format!("pod CIDR {} has no address for a gateway", host.pod_cidr)
            })?;
        let vxlan = cluster.overlay == Overlay::Vxlan;
        let mut t = tera::Context::new();
        t.insert("pod_cidr", &host.pod_cidr.to_string());
        t.insert("gateway", &gateway.to_string());
        t.insert("pod_subnet", &cluster.pod_subnet.to_string());
        t.insert("vxlan", &vxlan);
        let mut peers = Vec::new();
        for h in cluster.hosts.iter().filter(|h| h.name != host.name) {
            let (vx_addr, mac) = if vxlan {
                overlay_identity(h)?
            } else {
                (String::new(), String::new())
            };
            if vxlan && h.address.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(format!(
                    "the VXLAN overlay needs IPv4 node addresses; {} has {}",
                    h.name, h.address
                ));
            }
            peers.push(Peer {
                cidr: h.pod_cidr.to_string(),
                address: h.address.clone(),
                vx_addr,
                mac,
            });
        }
        t.insert("peers", &peers);
        if vxlan {
            let (iface, link_mtu) = observed.uplink()?;
            let (vx_addr, mac) = overlay_identity(host)?;
            // VXLAN over IPv4 adds 50 bytes to every packet
            let mtu = cluster.vxlan.mtu.unwrap_or(link_mtu.saturating_sub(50));
            t.insert("device", VXLAN_DEVICE);
            t.insert("vni", &cluster.vxlan.vni);
            t.insert("port", &cluster.vxlan.port);
            t.insert("mtu", &mtu);
            t.insert("local", &host.address);
            t.insert("iface", &iface);
            t.insert("vx_addr", &vx_addr);
            t.insert("mac", &mac);
        } else {
            t.insert("mtu", &0);
        }
        let mut unit = tera::Context::new();
        unit.insert(
            "description",
            "provision: the pod network between the nodes",
        );
        // not network-online.target: waiting for every link to be online can hold the overlay
        // back for minutes after a reboot while pods already run; it needs only the uplink
        unit.insert("after", &["network.target"]);
        unit.insert("wants", &Vec::<String>::new());
        unit.insert("env", &Vec::<String>::new());
        unit.insert("exec_start_pre", &Vec::<String>::new());
        unit.insert("exec", &format!("/bin/sh {ROUTES_SCRIPT}"));
        unit.insert("args", &Vec::<String>::new());
        let service: std::collections::BTreeMap<&str, &str> =
            // at boot the xtables lock or the uplink may not be ready yet: try again
            [
                ("Type", "oneshot"),
                ("RemainAfterExit", "yes"),
                ("Restart", "on-failure"),
                ("RestartSec", "5"),
            ]
            .into();
        unit.insert("service", &service);
        let mut actions = vec![
            Action::dir("/etc/cni/net.d", 0o755),
            Action::file(CONFLIST, render("cni-bridge.conflist", &t), 0o644),
            Action::dir("/usr/local/lib/provision", 0o755),
            Action::file(ROUTES_SCRIPT, render("pod-routes.sh", &t), 0o755),
            Action::file(ROUTES_UNIT, render("component.service", &unit), 0o644),
            Action::Unit(UnitSpec {
                name: "provision-pod-routes.service".into(),
                enabled: true,
                active: true,
                restart_when_changed: vec![ROUTES_SCRIPT.into(), ROUTES_UNIT.into()],
            }),
        ];
        if vxlan {
            actions.push(restore_overlay(cluster.hosts.len() - 1));
        }
        Ok(actions.into())
    }
}
