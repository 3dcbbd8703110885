//! keepalived holding the API's VIP: one VRRP instance per control plane, every other control
//! plane a unicast peer, the VIP given up when the local API server is not ready.

use crate::cluster::{API_PORT, Cluster, Host, Vip};
use crate::render::render_typed;
use crate::systemd::Unit;
use serde::Serialize;

pub const SERVICE: &str = "api-vip";
pub const UNIT: &str = "/etc/systemd/system/api-vip.service";
pub const DIR: &str = "/etc/kubernetes/api-vip";
pub const CONFIG: &str = "/etc/kubernetes/api-vip/keepalived.conf";
/// What a control plane runs for it: the engine, and the readiness check's client.
pub const HOST_COMMANDS: [&str; 2] = ["keepalived", "curl"];

#[derive(Serialize)]
struct Config<'a> {
    host: &'a str,
    instance: String,
    interface: &'a str,
    router_id: u8,
    priority: u8,
    address: &'a str,
    peers: Vec<&'a str>,
    vip: String,
    prefix: u8,
    api_port: u16,
}

/// `host`'s keepalived configuration; `uplink` is the interface that holds its address.
pub fn config(cluster: &Cluster, vip: &Vip, host: &Host, uplink: &str) -> Result<String, String> {
    let planes: Vec<&Host> = cluster.control_planes().collect();
    let index = planes
        .iter()
        .position(|h| h.name == host.name)
        .ok_or_else(|| format!("{} is not a control plane", host.name))?;
    render_typed(
        "keepalived.conf",
        &Config {
            host: &host.name,
            instance: format!("api_{}", cluster.name.replace(['-', '.'], "_")),
            interface: vip.interface.as_deref().unwrap_or(uplink),
            router_id: vip.router_id,
            // distinct priorities settle a tie at once; nopreempt keeps the holder after that
            priority: 200u8.saturating_sub(index.min(199) as u8),
            address: &host.address,
            peers: planes
                .iter()
                .filter(|h| h.name != host.name)
                .map(|h| h.address.as_str())
                .collect(),
            vip: vip.address.to_string(),
            prefix: if vip.address.is_ipv4() { 32 } else { 128 },
            api_port: API_PORT,
        },
    )
}

pub fn unit() -> Result<String, String> {
    Unit::new(
        "keepalived: the API's VIP on a control plane whose API server is ready",
        "/usr/sbin/keepalived",
    )
    .after(&["network.target", "kube-apiserver.service"])
    .exec_start_pre(&[&format!(
        "/usr/sbin/keepalived --config-test --use-file={CONFIG}"
    )])
    .args(&[
        "--dont-fork",
        "--log-console",
        "--vrrp",
        &format!("--use-file={CONFIG}"),
        // its own pid files: a distribution keepalived.service may run beside it
        "--pid=/run/api-vip/keepalived.pid",
        "--vrrp_pid=/run/api-vip/vrrp.pid",
    ])
    .service(&[
        ("RuntimeDirectory", "api-vip"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "always"),
        ("RestartSec", "2"),
    ])
    .render()
}

/// A shell test that holds once the VIP's API answers ready, from wherever it is held.
pub fn answers_check(cluster: &Cluster) -> String {
    format!(
        "curl -sfk --max-time 2 -o /dev/null {}/readyz",
        cluster.endpoint.url()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_control_plane_peers_with_the_others_and_gives_the_vip_up_when_not_ready()
    -> Result<(), String> {
        let c = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: prod-eu1}\nspec:\n  controlPlaneEndpoint: {vip: 10.0.0.100, virtualRouterId: 42}\n  hosts:\n  - {name: cp1, address: 10.0.0.11, roles: [control-plane]}\n  - {name: cp2, address: 10.0.0.12, roles: [control-plane]}\n  - {name: cp3, address: 10.0.0.13, roles: [control-plane]}\n  - {name: w1, address: 10.0.0.21, roles: [worker]}\n",
        );
        let vip = c.endpoint.vip.clone().ok_or("no vip")?;
        let cfg = config(&c, &vip, &c.hosts[1], "eth0")?;
        for want in [
            "vrrp_instance api_prod_eu1 {",
            "interface eth0",
            "virtual_router_id 42",
            "priority 199",
            "nopreempt",
            "unicast_src_ip 10.0.0.12",
            "        10.0.0.11\n        10.0.0.13\n    }",
            "10.0.0.100/32 dev eth0",
            "https://127.0.0.1:6443/readyz",
        ] {
            assert!(cfg.contains(want), "{want:?} not in\n{cfg}");
        }
        assert!(!cfg.contains("10.0.0.21"), "a worker is no peer:\n{cfg}");
        assert!(config(&c, &vip, &c.hosts[3], "eth0").is_err());
        assert_eq!(c.endpoint.url(), "https://10.0.0.100:6443");
        Ok(())
    }
}
