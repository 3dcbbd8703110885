//! The built-in network: the upstream bridge, host-local, portmap and loopback plugins with the
//! node's pod CIDR, and a VXLAN overlay to every other node's pod CIDR (forwarding entries and
//! routes programmed from the inventory; or, with `overlay: none`, plain routes through the
//! nodes' addresses), kept by a unit so it comes back after a reboot. Pod-to-pod traffic keeps
//! its addresses; traffic leaving the pod range is masqueraded. No policy engine.

use super::{Cni, NET_D};
use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, Leftovers, UnitSpec};
use crate::inventory::Overlay as OverlayKind;
use crate::render::render_typed;
use crate::systemd::Unit;
use serde::Serialize;

pub struct Builtin;

/// What `cni-bridge.conflist` and `pod-routes.sh` are rendered from.
#[derive(Serialize)]
struct Network {
    pod_cidr: String,
    gateway: String,
    pod_subnet: String,
    vxlan: bool,
    /// The bridge's MTU: the overlay's, or 0 (the link's) without one.
    mtu: u32,
    peers: Vec<Peer>,
    /// The VXLAN device's settings (its keys are absent without an overlay).
    #[serde(flatten)]
    overlay: Option<Overlay>,
}

#[derive(Serialize)]
struct Overlay {
    device: &'static str,
    vni: u32,
    port: u16,
    local: String,
    iface: String,
    vx_addr: String,
    mac: String,
    #[serde(skip)]
    mtu: u32,
}

pub const CONFLIST: &str = "/etc/cni/net.d/10-provision.conflist";
pub const ROUTES_SCRIPT: &str = "/usr/local/lib/provision/pod-routes.sh";
pub const ROUTES_SERVICE: &str = "provision-pod-routes";
pub const ROUTES_UNIT: &str = "/etc/systemd/system/provision-pod-routes.service";

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

/// The overlay is kernel state the files do not show: when its link or a route to a peer is
/// gone (deleted by hand, lost to a network restart), restarting the unit puts it back.
fn restore_overlay(peers: usize) -> Action {
    Action::Exec {
        label: format!("restore the overlay ({VXLAN_DEVICE} up with routes to {peers} peer(s))"),
        cmd: format!("systemctl restart {ROUTES_SERVICE}.service"),
        unless: format!(
            "ip link show {VXLAN_DEVICE} up 2>/dev/null | grep -q {VXLAN_DEVICE} && [ \"$(ip route show dev {VXLAN_DEVICE} 2>/dev/null | grep -c onlink)\" -ge {peers} ]"
        ),
    }
}

impl Cni for Builtin {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn probes(&self, cluster: &Cluster) -> Vec<Probe> {
        if cluster.overlay == OverlayKind::Vxlan {
            vec![Probe::Uplink]
        } else {
            Vec::new()
        }
    }

    fn node_actions(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
    ) -> Result<Vec<Action>, String> {
        let gateway =
            host.pod_cidr.hosts().next().ok_or_else(|| {
                format!("pod CIDR {} has no address for a gateway", host.pod_cidr)
            })?;
        let vxlan = cluster.overlay == OverlayKind::Vxlan;
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
        let overlay = if vxlan {
            let (iface, link_mtu) = observed.uplink()?;
            let (vx_addr, mac) = overlay_identity(host)?;
            Some(Overlay {
                device: VXLAN_DEVICE,
                vni: cluster.vxlan.vni,
                port: cluster.vxlan.port,
                local: host.address.clone(),
                iface,
                vx_addr,
                mac,
                // VXLAN over IPv4 adds 50 bytes to every packet
                mtu: cluster.vxlan.mtu.unwrap_or(link_mtu.saturating_sub(50)),
            })
        } else {
            None
        };
        let t = Network {
            pod_cidr: host.pod_cidr.to_string(),
            gateway: gateway.to_string(),
            pod_subnet: cluster.pod_subnet.to_string(),
            vxlan,
            mtu: overlay.as_ref().map_or(0, |o| o.mtu),
            peers,
            overlay,
        };
        // not network-online.target: waiting for every link to be online can hold the overlay
        // back for minutes after a reboot while pods already run; it needs only the uplink
        let unit = Unit::new(
            "provision: the pod network between the nodes",
            &format!("/bin/sh {ROUTES_SCRIPT}"),
        )
        .after(&["network.target"])
        // at boot the xtables lock or the uplink may not be ready yet: try again
        .service(&[
            ("Type", "oneshot"),
            ("RemainAfterExit", "yes"),
            ("Restart", "on-failure"),
            ("RestartSec", "5"),
        ]);
        let mut actions = vec![
            Action::dir(NET_D, 0o755),
            Action::file(CONFLIST, render_typed("cni-bridge.conflist", &t)?, 0o644),
            Action::dir("/usr/local/lib/provision", 0o755),
            Action::file(ROUTES_SCRIPT, render_typed("pod-routes.sh", &t)?, 0o755),
            Action::file(ROUTES_UNIT, unit.render()?, 0o644),
            Action::Unit(UnitSpec {
                name: format!("{ROUTES_SERVICE}.service"),
                enabled: true,
                active: true,
                restart_when_changed: vec![ROUTES_SCRIPT.into(), ROUTES_UNIT.into()],
            }),
        ];
        if vxlan {
            actions.push(restore_overlay(cluster.hosts.len() - 1));
        }
        Ok(actions)
    }

    fn config(&self) -> &'static str {
        CONFLIST
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            units: vec![ROUTES_SERVICE.into()],
            paths: vec![CONFLIST.into(), ROUTES_UNIT.into()],
            links: vec![VXLAN_DEVICE.into(), "cni0".into()],
            // the portmap plugin's chains
            chains: vec!["CNI-".into()],
            ..Leftovers::default()
        }
    }

    fn suspect(&self, host: &Host) -> String {
        format!(
            "the pod network unit on {} (`systemctl status {ROUTES_SERVICE}`)",
            host.name
        )
    }
}
