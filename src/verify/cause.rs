//! Likely causes of a failed row, found by looking at the nodes involved over SSH: the overlay
//! link, the route to the other node's pod range, kube-proxy's unit and rules.

use crate::cluster::{Cluster, Host};
use crate::cni::builtin::VXLAN_DEVICE;
use crate::inventory::{CniName, Overlay};
use crate::run::Ctx;
use crate::ssh::shell_quote;

async fn sh(ctx: &Ctx, host: &Host, script: &str) -> Option<(u32, String)> {
    let session = ctx.session(host).await.ok()?;
    let out = session.exec(script, None).await.ok()?;
    Some((out.status, out.stdout_text()))
}

fn builtin_vxlan(cluster: &Cluster) -> bool {
    cluster.cni == CniName::Builtin && cluster.overlay == Overlay::Vxlan
}

/// Why traffic from `from` (a pod or the node itself) to a pod at `ip` on `to` got no answer.
pub async fn unreachable_pod(ctx: &Ctx, from: &Host, to: &Host, ip: &str) -> Option<String> {
    let cluster = &ctx.cluster;
    if builtin_vxlan(cluster) {
        let hosts = if from.name == to.name {
            vec![from]
        } else {
            vec![from, to]
        };
        for h in hosts {
            if let Some((status, _)) = sh(ctx, h, &format!("ip link show {VXLAN_DEVICE}")).await
                && status != 0
            {
                return Some(format!(
                    "the VXLAN link {VXLAN_DEVICE} is missing on {}: re-run `provision init phase cni` (or `provision join phase cni`) to restore it",
                    h.name
                ));
            }
        }
    }
    if from.name != to.name
        && cluster.cni == CniName::Builtin
        && let Some((_, route)) = sh(ctx, from, &format!("ip route get {}", shell_quote(ip))).await
    {
        let expected = match cluster.overlay {
            Overlay::Vxlan => format!("dev {VXLAN_DEVICE}"),
            Overlay::None => format!("via {}", to.address),
        };
        if !route.contains(&expected) {
            return Some(format!(
                "no route to {}'s pod range {} on {} (`ip route get {ip}` says: {}): re-run `provision join phase cni`",
                to.name,
                to.pod_cidr,
                from.name,
                route.lines().next().unwrap_or_default().trim()
            ));
        }
    }
    if from.name != to.name && builtin_vxlan(cluster) {
        return Some(format!(
            "{} routes the packets into the overlay but no answer comes back: is UDP port {} open between {} and {} (a firewall or security group)?",
            from.name, cluster.vxlan.port, from.address, to.address
        ));
    }
    None
}

/// How long units that restart themselves (`activating`: systemd's `Restart=` after an exit,
/// as the scheduler exits when the API server was away past its lease) are waited for before
/// their states count: two of the control plane's `RestartSec=5` and a start.
const RESTART_SETTLES_WITHIN_S: u32 = 15;

/// `systemctl is-active` of `units`, once none is `activating` or after
/// `RESTART_SETTLES_WITHIN_S`.
pub fn settled_states(units: &[&str]) -> String {
    let units = units.join(" ");
    format!(
        "i=0; while [ $i -lt {} ] && systemctl is-active {units} | grep -qx activating; do sleep 0.5; i=$((i+1)); done; systemctl is-active {units}",
        RESTART_SETTLES_WITHIN_S * 2
    )
}

/// A unit that `systemctl is-active` did not find active, and the state it found instead.
#[derive(Debug, PartialEq)]
pub struct Down {
    pub unit: String,
    pub state: String,
}

impl Down {
    /// systemd is restarting it (`Restart=` after an exit): it keeps failing, not stopped.
    pub fn restarting(&self) -> bool {
        self.state == "activating"
    }
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {}", self.unit, self.state)
    }
}

/// The units of `units` that `systemctl is-active` (its output `states`, a line per unit) did
/// not find active.
pub fn inactive(units: &[&str], states: &str) -> Vec<Down> {
    units
        .iter()
        .zip(states.lines().chain(std::iter::repeat("unknown")))
        .filter(|(_, s)| s.trim() != "active")
        .map(|(u, s)| Down {
            unit: u.to_string(),
            state: s.trim().to_string(),
        })
        .collect()
}

/// `down` as one line: "a is failed, b is inactive".
pub fn listed(down: &[Down], separator: &str) -> String {
    down.iter()
        .map(Down::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// Why no pod can start on `node`: its runtime or kubelet unit is not running (None when both
/// are, or the node cannot be asked). Checked before a test pod is waited for.
pub async fn node_units_down(ctx: &Ctx, node: &Host) -> Option<String> {
    let runtime = crate::runtime::of(ctx.cluster.runtime).service();
    units_down(ctx, node, &[runtime, "kubelet"]).await
}

/// Those of `units` not active on `node`, with the command that starts them again; None when
/// all run (or the node cannot be asked).
pub async fn units_down(ctx: &Ctx, node: &Host, units: &[&str]) -> Option<String> {
    let (_, states) = sh(ctx, node, &settled_states(units)).await?;
    let down = inactive(units, &states);
    let first = down.first()?;
    let repair = if ctx.cluster.is_seed_control_plane(node) {
        "`provision init`".to_string()
    } else {
        format!("`provision join --hosts {}`", node.name)
    };
    Some(format!(
        "{} on {}: {repair} starts it again (or `journalctl -u {}` says why it stopped)",
        listed(&down, ", "),
        node.name,
        first.unit
    ))
}

/// Why a pod on `node` could not reach a Service's virtual IP.
pub async fn unreachable_service(ctx: &Ctx, node: &Host, cluster_ip: &str) -> Option<String> {
    match sh(ctx, node, "systemctl is-active kube-proxy").await {
        Some((0, _)) => {}
        Some((_, state)) => {
            return Some(format!(
                "kube-proxy is not running on {} (it is {}): `systemctl start kube-proxy`, then `journalctl -u kube-proxy`",
                node.name,
                state.trim()
            ));
        }
        None => return None,
    }
    let rules = format!(
        "iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -c -- {}",
        shell_quote(&format!("-d {cluster_ip}/"))
    );
    match sh(ctx, node, &rules).await {
        Some((_, n)) if n.trim() == "0" => Some(format!(
            "kube-proxy on {} has not programmed the Service {cluster_ip} (no KUBE-SERVICES rule): see `journalctl -u kube-proxy`",
            node.name
        )),
        _ => Some(
            "the Service's address is translated, but its endpoints did not answer: see the pod-to-pod rows".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit systemd is restarting is waited for; the states are read once it has settled.
    #[test]
    fn a_restarting_unit_is_waited_for_before_its_state_counts()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let calls = dir.path().join("calls");
        crate::host::stand_in(
            dir.path(),
            "systemctl",
            &format!(
                "#!/bin/sh\necho x >> {c}\nif [ $(wc -l < {c}) -lt 3 ]; then printf 'active\\nactivating\\n'; else printf 'active\\nactive\\n'; fi\n",
                c = calls.display()
            ),
        )?;
        let script = settled_states(&["etcd", "kube-scheduler"]);
        let states = crate::host::sh_with(&script, Some(dir.path()), &[])?;
        assert_eq!(states, "active\nactive\n");
        assert!(inactive(&["etcd", "kube-scheduler"], &states).is_empty());
        let down = inactive(&["etcd", "kube-scheduler"], "active\nactivating\n");
        assert_eq!(listed(&down, ", "), "kube-scheduler is activating");
        assert!(down[0].restarting());
        Ok(())
    }
}
