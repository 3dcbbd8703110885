//! kube-router with its firewall controller only: the NetworkPolicy engine of the networks that
//! have none of their own (k3s's choice beside Flannel). It turns each node's policies into
//! iptables chains and ipsets (hash:ip, hash:net), and judges bridged traffic between pods on
//! one node too (physdev). Its router (BGP) and service proxy stay off: the built-in network
//! routes pods and kube-proxy serves Services. One unit per node; it reads the API with a
//! ServiceAccount token in a kubeconfig of its own, and needs `ipset` and `iptables` on the host.

use crate::cluster::{Cluster, Host};
use crate::host::Leftovers;
use crate::systemd::Unit;

/// The catalog component and the binary it installs.
pub const COMPONENT: &str = "kube-router";
pub const SERVICE: &str = "kube-router";
pub const UNIT: &str = "/etc/systemd/system/kube-router.service";
/// Its kubeconfig (a ServiceAccount token: 0600, in a directory root alone reads).
pub const DIR: &str = "/etc/kubernetes/network-policies";
pub const KUBECONFIG: &str = "/etc/kubernetes/network-policies/kubeconfig";
/// The chain its FORWARD rule jumps to, made once it has read the API: the sign it enforces.
pub const FORWARD_CHAIN: &str = "KUBE-ROUTER-FORWARD";
/// Its ipsets: the sources and destinations of each policy (IPv6 ones get `inet6:`).
pub const IPSETS: [&str; 3] = ["KUBE-SRC-", "KUBE-DST-", "inet6:KUBE-"];
/// Its health endpoint (loopback only through the check; it listens on every address).
pub const HEALTH_PORT: u16 = 20244;
/// What the host must have for it: it runs these (ipset restore, iptables-restore).
pub const HOST_COMMANDS: [&str; 3] = ["ipset", "iptables-save", "iptables-restore"];

/// The priority of the routing rule that turns away what pods send to a Service address
/// kube-proxy did not translate: a Service without endpoints, such as the API server's own
/// while it restarts. kube-proxy refuses those packets in FORWARD, but this engine's chain comes
/// first there and accepts them: they would leave by the default route, to an address nothing
/// answers, and the connection would hang until its client gives up (client-go: 30 s, so
/// CoreDNS learnt of new Services half a minute late after each API server restart). An
/// unreachable route refuses them at once, and nothing leaves the node.
pub const UNTRANSLATED_SERVICE_RULE: u32 = 32100;

/// Its identity and least rights: read pods, namespaces, NetworkPolicies, its Node, and what
/// its informers list whatever controllers run (Services, Endpoints, EndpointSlices).
pub const NAMESPACE: &str = "kube-system";
pub const SERVICE_ACCOUNT: &str = "kube-router";
pub const TOKEN_SECRET: &str = "kube-router-token";
pub const CLUSTER_ROLE: &str = "provision:kube-router";

/// The unit on `host`: firewall only, the node's name, the cluster's Service range.
pub fn unit(cluster: &Cluster, host: &Host) -> Result<String, String> {
    let ipv6 = matches!(cluster.service_subnet, ipnet::IpNet::V6(_));
    Unit::new(
        "kube-router: NetworkPolicy on this node (firewall controller only)",
        &format!("/usr/local/bin/{COMPONENT}"),
    )
    .after(&["network.target"])
    .exec_start_pre(&[&untranslated_service_rule(cluster)])
    .args(&[
        format!("--kubeconfig={KUBECONFIG}"),
        format!("--hostname-override={}", host.name),
        "--run-firewall=true".to_string(),
        "--run-router=false".to_string(),
        "--run-service-proxy=false".to_string(),
        "--enable-cni=false".to_string(),
        format!("--enable-ipv4={}", !ipv6),
        format!("--enable-ipv6={ipv6}"),
        format!("--service-cluster-ip-range={}", cluster.service_subnet),
        format!("--health-port={HEALTH_PORT}"),
        "--v=1".to_string(),
    ])
    // stopped, it leaves its rules in place: policies stay enforced while it restarts
    .service(&[("Restart", "always"), ("RestartSec", "2")])
    .render()
}

/// The `ExecStartPre=` that (re)makes the rule of [`UNTRANSLATED_SERVICE_RULE`] for the
/// cluster's pod and Service ranges. Its failure (a kernel without policy routing) does not
/// keep the engine from starting (`-`): policies matter more than a quick refusal.
fn untranslated_service_rule(cluster: &Cluster) -> String {
    let family = match cluster.service_subnet {
        ipnet::IpNet::V6(_) => "-6",
        ipnet::IpNet::V4(_) => "-4",
    };
    let pref = UNTRANSLATED_SERVICE_RULE;
    format!(
        "-/bin/sh -c 'while ip {family} rule del pref {pref} 2>/dev/null; do :; done; ip {family} rule add pref {pref} from {} to {} unreachable'",
        cluster.pod_subnet, cluster.service_subnet
    )
}

/// What it leaves on a host; reset removes it whichever network the cluster runs. (Its chains
/// start with KUBE-, which reset removes anyway.)
pub fn leftovers() -> Leftovers {
    Leftovers {
        units: vec![SERVICE.into()],
        paths: vec![UNIT.into(), DIR.into()],
        ipsets: IPSETS.iter().map(|s| s.to_string()).collect(),
        rule_prefs: vec![UNTRANSLATED_SERVICE_RULE],
        ..Leftovers::default()
    }
}

/// A shell test that holds once the engine enforces policies on the host: its unit runs and
/// FORWARD jumps to its chain.
pub fn enforcing_check() -> String {
    format!(
        "systemctl is-active -q {SERVICE} && iptables -w 5 -S FORWARD 2>/dev/null | grep -q -- '-j {FORWARD_CHAIN}'"
    )
}

/// Whether the cluster runs it (`spec.cni.networkPolicy`).
pub fn enabled(cluster: &Cluster) -> bool {
    cluster.policy_engine
}

/// What to look at on `host` when its policies are not enforced.
pub fn suspect(host: &Host) -> String {
    format!(
        "{SERVICE} on {} (`systemctl status {SERVICE}`, `journalctl -u {SERVICE}`)",
        host.name
    )
}
