//! haproxy on each node's loopback: the node's agents reach every ready API server through it
//! (the model of Talos' KubePrism and k0s' node-local load balancing), each server checked on
//! `/readyz` every second and its connections cut when it fails.

use crate::cluster::{API_PORT, Cluster, LOCAL_API_PORT, https_url};
use crate::render::render_typed;
use crate::systemd::Unit;
use serde::Serialize;

pub const SERVICE: &str = "api-proxy";
pub const UNIT: &str = "/etc/systemd/system/api-proxy.service";
pub const DIR: &str = "/etc/kubernetes/api-proxy";
pub const CONFIG: &str = "/etc/kubernetes/api-proxy/haproxy.cfg";
pub const HOST_COMMANDS: [&str; 1] = ["haproxy"];

#[derive(Serialize)]
struct Server<'a> {
    name: &'a str,
    address: String,
}

#[derive(Serialize)]
struct Config<'a> {
    bind: String,
    servers: Vec<Server<'a>>,
}

/// The same on every node: every control plane of the inventory is a server.
pub fn config(cluster: &Cluster) -> Result<String, String> {
    let address = |a: &str| {
        if a.contains(':') {
            format!("[{a}]:{API_PORT}")
        } else {
            format!("{a}:{API_PORT}")
        }
    };
    render_typed(
        "haproxy.cfg",
        &Config {
            bind: format!("127.0.0.1:{LOCAL_API_PORT}"),
            servers: cluster
                .control_planes()
                .map(|h| Server {
                    name: &h.name,
                    address: address(&h.address),
                })
                .collect(),
        },
    )
}

pub fn unit() -> Result<String, String> {
    Unit::new(
        "haproxy: this node's way to every ready API server, on loopback",
        "/usr/sbin/haproxy",
    )
    // it binds loopback; a server not reachable yet is retried by its health checks
    .after(&["network.target"])
    .exec_start_pre(&[&format!("/usr/sbin/haproxy -c -q -f {CONFIG}")])
    .args(&["-Ws", "-f", CONFIG, "-p", "/run/api-proxy/haproxy.pid"])
    .service(&[
        ("Type", "notify"),
        ("RuntimeDirectory", "api-proxy"),
        ("ExecReload", "/bin/kill -USR2 $MAINPID"),
        ("Restart", "always"),
        ("RestartSec", "2"),
    ])
    .render()
}

/// A shell test that holds once an API server answers ready through the node's proxy.
pub fn answers_check() -> String {
    format!(
        "curl -sfk --max-time 2 -o /dev/null {}/readyz",
        https_url("127.0.0.1", LOCAL_API_PORT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_plane_is_a_checked_server_behind_loopback() -> Result<(), String> {
        let c = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  controlPlaneEndpoint: {vip: 10.0.0.100}\n  hosts:\n  - {name: cp1, address: 10.0.0.11, roles: [control-plane]}\n  - {name: cp2, address: 10.0.0.12, roles: [control-plane]}\n  - {name: w1, address: 10.0.0.21, roles: [worker]}\n",
        );
        let cfg = config(&c)?;
        for want in [
            "bind 127.0.0.1:6444",
            "option httpchk GET /readyz",
            "on-marked-down shutdown-sessions",
            "server cp1 10.0.0.11:6443",
            "server cp2 10.0.0.12:6443",
        ] {
            assert!(cfg.contains(want), "{want:?} not in\n{cfg}");
        }
        assert!(!cfg.contains("w1"), "{cfg}");
        assert_eq!(c.node_api_url(), "https://127.0.0.1:6444");
        Ok(())
    }
}
