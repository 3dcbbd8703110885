//! The NetworkPolicy matrix: each case is a set of policies and what must then get through and
//! what must not, between pods on the same node and on another node. Pure data, built from the
//! running test pods, so what is asserted can be read (and tested) without a cluster.
//!
//! The cases run at the same time, so none may see another's policies: a case whose policies
//! select its own server alone shares the clients of the verify namespace; one whose policies
//! reach a whole namespace (every pod, every client) gets a namespace of its own.

use super::super::probe::{ALT_PORT, POD_PORT};
use crate::cluster::Host;
use serde_json::{Value, json};

/// A pod traffic is sent from or to.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub namespace: String,
    pub host: Host,
    pub ip: String,
}

impl Peer {
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.host.name)
    }
}

/// Where a check's traffic starts.
#[derive(Clone, Debug)]
pub enum From {
    Pod(Peer),
    /// The node's own network namespace, as root (where the kubelet's probes come from).
    Node(Host),
}

/// What it is sent to.
#[derive(Clone, Debug)]
pub enum To {
    Pod {
        peer: Box<Peer>,
        port: u16,
    },
    /// A lookup of this name through the cluster DNS.
    Dns(String),
}

#[derive(Clone, Debug)]
pub struct Check {
    pub from: From,
    pub to: To,
    pub allowed: bool,
    /// Decided by an egress policy (on the client's node) rather than an ingress one.
    pub egress: bool,
}

impl Check {
    fn pod(from: &Peer, to: &Peer, port: u16, allowed: bool) -> Check {
        Check {
            from: From::Pod(from.clone()),
            to: To::Pod {
                peer: Box::new(to.clone()),
                port,
            },
            allowed,
            egress: false,
        }
    }

    fn egress(mut self) -> Check {
        self.egress = true;
        self
    }

    /// "same node" or "other node", for pod-to-pod traffic.
    pub fn placement(&self) -> &'static str {
        match (&self.from, &self.to) {
            (From::Pod(a), To::Pod { peer: b, .. }) if a.host.name == b.host.name => "same node",
            (From::Pod(_), To::Pod { .. }) => "other node",
            (From::Node(_), _) => "from its node",
            (_, To::Dns(_)) => "to DNS",
        }
    }

    /// `client → server:port`, with their nodes.
    pub fn subject(&self) -> String {
        let from = match &self.from {
            From::Pod(p) => p.label(),
            From::Node(h) => format!("node {}", h.name),
        };
        let to = match &self.to {
            To::Pod { peer, port } => format!("{}:{port} ({})", peer.name, peer.host.name),
            To::Dns(name) => format!("DNS {name}"),
        };
        format!("{from} → {to}")
    }

    /// The node whose engine decides this traffic: the server's for ingress, the client's
    /// for egress.
    pub fn decided_on(&self) -> &Host {
        match (&self.from, &self.to) {
            (From::Pod(p), _) if self.egress => &p.host,
            (From::Node(h), _) if self.egress => h,
            (_, To::Pod { peer, .. }) => &peer.host,
            (From::Pod(p), To::Dns(_)) => &p.host,
            (From::Node(h), To::Dns(_)) => h,
        }
    }
}

pub struct Case {
    /// The policy's name, as the rows show it.
    pub name: &'static str,
    /// Where its policies are created.
    pub namespace: String,
    pub policies: Vec<Value>,
    pub checks: Vec<Check>,
    /// After the checks: this pod's readiness probe (the kubelet, from its node) still passes.
    pub kubelet_probe: Option<Peer>,
}

/// How far a case's policies reach, and so which pods it may share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// They select the case's own server alone.
    Server,
    /// They select every pod, or every client, of their namespace.
    Namespace,
}

/// The cases, in the order their rows are written.
pub const CASES: [(&str, Scope); 7] = [
    ("default-deny-ingress", Scope::Namespace),
    ("allow-from-pod-selector", Scope::Server),
    ("allow-from-namespace-selector", Scope::Server),
    ("allow-from-ip-block", Scope::Server),
    ("allow-named-port", Scope::Server),
    ("allow-port-range", Scope::Server),
    ("default-deny-egress-but-dns", Scope::Namespace),
];

/// The pods of a case. `server` and `peer` share a node; `client` and `outsider` are on
/// another. `client`, `peer` and `elsewhere` carry the client label; `elsewhere` lives in the
/// peer namespace (labelled `PEER_NAMESPACE_LABEL`), shared by every case.
pub struct Pods {
    pub server: Peer,
    pub client: Peer,
    pub peer: Peer,
    pub outsider: Peer,
    pub elsewhere: Peer,
}

/// A part a pod plays in a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Server,
    Client,
    Peer,
    Outsider,
    Elsewhere,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Server,
        Part::Client,
        Part::Peer,
        Part::Outsider,
        Part::Elsewhere,
    ];
}

/// A pod of the matrix, before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub namespace: String,
    pub name: String,
    /// On the server's node, else on the client's.
    pub beside_server: bool,
    /// Carries `CLIENT_LABEL`.
    pub client_label: bool,
    /// The server of this case (`CASE_LABEL`).
    pub serves: Option<&'static str>,
    /// Has a readiness probe (the kubelet's traffic), and counts as up once Ready.
    pub probed: bool,
}

/// The namespace of pods, policies and peers that `ns` (the verify namespace) has its matrix
/// in, for `case` of `scope`.
pub fn namespace_of(ns: &str, case: &str, scope: Scope) -> String {
    match scope {
        Scope::Server => ns.to_string(),
        Scope::Namespace => format!("{ns}-{case}"),
    }
}

/// The second namespace, labelled `PEER_NAMESPACE_LABEL`, where `elsewhere` lives.
pub fn peer_namespace(ns: &str) -> String {
    format!("{ns}-peer")
}

/// The pod that plays `part` in `case`.
pub fn placed(ns: &str, case: &'static str, scope: Scope, part: Part) -> Planned {
    let (namespace, name) = match part {
        Part::Server => (namespace_of(ns, case, scope), format!("verify-np-{case}")),
        Part::Client => (namespace_of(ns, case, scope), "verify-np-client".into()),
        Part::Peer => (namespace_of(ns, case, scope), "verify-np-peer".into()),
        Part::Outsider => (namespace_of(ns, case, scope), "verify-np-outsider".into()),
        Part::Elsewhere => (peer_namespace(ns), "verify-np-elsewhere".into()),
    };
    Planned {
        namespace,
        name,
        beside_server: matches!(part, Part::Server | Part::Peer | Part::Elsewhere),
        client_label: matches!(part, Part::Client | Part::Peer | Part::Elsewhere),
        serves: (part == Part::Server).then_some(case),
        probed: part == Part::Peer,
    }
}

/// Every pod the matrix needs, once each.
pub fn plan(ns: &str) -> Vec<Planned> {
    let mut all: Vec<Planned> = Vec::new();
    for (case, scope) in CASES {
        for part in Part::ALL {
            let p = placed(ns, case, scope, part);
            if !all
                .iter()
                .any(|q| q.namespace == p.namespace && q.name == p.name)
            {
                all.push(p);
            }
        }
    }
    all
}

/// The namespaces the matrix adds beside the verify namespace.
pub fn namespaces(ns: &str) -> Vec<String> {
    let mut all = vec![peer_namespace(ns)];
    for (case, scope) in CASES {
        if scope == Scope::Namespace {
            all.push(namespace_of(ns, case, scope));
        }
    }
    all
}

pub const CLIENT_LABEL: &str = "provision.io/role";
pub const PEER_NAMESPACE_LABEL: &str = "provision.io/verify-peer";
/// On a case's server, naming the case: what its policies select.
pub const CASE_LABEL: &str = "provision.io/verify-case";

fn policy(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

/// The server of `case` alone.
fn server_selector(case: &str) -> Value {
    json!({"matchLabels": {CASE_LABEL: case}})
}

/// The whole matrix (as the tests read it), in the order of `CASES`, each case played by its
/// pods in `cast` (same order).
#[cfg(test)]
pub fn cases(cast: &[Pods; 7], pod_subnet: &str, dns_name: Option<&str>) -> Vec<Case> {
    CASES
        .iter()
        .zip(cast)
        .map(|(&(name, _), pods)| case(name, pods, pod_subnet, dns_name))
        .collect()
}

/// The case `name` (one of `CASES`), played by `p`. `pod_subnet` is the cluster's; `dns_name`
/// what a DNS check looks up (None: DNS does not answer in this cluster, so the egress case
/// checks no lookup).
pub fn case(name: &'static str, p: &Pods, pod_subnet: &str, dns_name: Option<&str>) -> Case {
    let (s, a, b, o, e) = (&p.server, &p.client, &p.peer, &p.outsider, &p.elsewhere);
    let mut kubelet_probe = None;
    let checks = match name {
        "default-deny-ingress" => {
            kubelet_probe = Some(b.clone());
            vec![
                Check::pod(a, s, POD_PORT, false),
                Check::pod(b, s, POD_PORT, false),
                Check {
                    from: From::Node(s.host.clone()),
                    to: To::Pod {
                        peer: Box::new(s.clone()),
                        port: POD_PORT,
                    },
                    allowed: true,
                    egress: false,
                },
            ]
        }
        "allow-from-pod-selector" => vec![
            Check::pod(a, s, POD_PORT, true),
            Check::pod(b, s, POD_PORT, true),
            Check::pod(o, s, POD_PORT, false),
            // the same labels in another namespace do not match a podSelector alone
            Check::pod(e, s, POD_PORT, false),
        ],
        "allow-from-namespace-selector" => vec![
            Check::pod(e, s, POD_PORT, true),
            Check::pod(a, s, POD_PORT, false),
        ],
        "allow-from-ip-block" => vec![
            Check::pod(a, s, POD_PORT, true),
            Check::pod(b, s, POD_PORT, true),
            Check::pod(o, s, POD_PORT, false),
        ],
        "allow-named-port" => vec![
            Check::pod(a, s, POD_PORT, true),
            Check::pod(a, s, ALT_PORT, false),
            Check::pod(b, s, ALT_PORT, false),
        ],
        "allow-port-range" => vec![
            Check::pod(a, s, ALT_PORT, true),
            Check::pod(b, s, ALT_PORT, true),
            Check::pod(a, s, POD_PORT, false),
        ],
        "default-deny-egress-but-dns" => {
            let mut checks = vec![
                Check::pod(a, s, POD_PORT, false).egress(),
                Check::pod(b, s, POD_PORT, false).egress(),
                Check::pod(o, s, POD_PORT, true).egress(),
            ];
            if let Some(dns) = dns_name {
                checks.push(Check {
                    from: From::Pod(a.clone()),
                    to: To::Dns(dns.to_string()),
                    allowed: true,
                    egress: true,
                });
            }
            checks
        }
        _ => Vec::new(),
    };
    Case {
        name,
        // where the policies select: the server's namespace, or for egress the clients'
        namespace: if name == "default-deny-egress-but-dns" {
            a.namespace.clone()
        } else {
            s.namespace.clone()
        },
        policies: policies(name, pod_subnet, Some(&o.ip)).unwrap_or_default(),
        checks,
        kubelet_probe,
    }
}

/// The policies of `case` (one of `CASES`), in its namespace. `outsider` is the address of
/// allow-from-ip-block's outsider, which its policy excepts: None while that pod has none yet,
/// and then that case's policies are None. The others can be made before their pods run.
pub fn policies(case: &str, pod_subnet: &str, outsider: Option<&str>) -> Option<Vec<Value>> {
    let clients = json!({"podSelector": {"matchLabels": {CLIENT_LABEL: "client"}}});
    let ingress = |rule: Value| {
        vec![policy(
            case,
            json!({"podSelector": server_selector(case), "policyTypes": ["Ingress"],
                   "ingress": [rule]}),
        )]
    };
    Some(match case {
        "default-deny-ingress" => vec![policy(
            case,
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )],
        "allow-from-pod-selector" => ingress(json!({"from": [clients]})),
        "allow-from-namespace-selector" => ingress(json!({"from": [{"namespaceSelector":
            {"matchLabels": {PEER_NAMESPACE_LABEL: "true"}}}]})),
        "allow-from-ip-block" => ingress(
            json!({"from": [{"ipBlock": {"cidr": pod_subnet, "except": [host_cidr(outsider?)]}}]}),
        ),
        "allow-named-port" => ingress(json!({"ports": [{"port": "http", "protocol": "TCP"}]})),
        "allow-port-range" => ingress(
            json!({"ports": [{"port": ALT_PORT, "endPort": ALT_PORT + 9, "protocol": "TCP"}]}),
        ),
        "default-deny-egress-but-dns" => vec![policy(
            case,
            json!({"podSelector": clients["podSelector"],
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"namespaceSelector": {"matchLabels":
                            {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            }]}),
        )],
        _ => Vec::new(),
    })
}

/// One address as a CIDR.
fn host_cidr(ip: &str) -> String {
    if ip.contains(':') {
        format!("{ip}/128")
    } else {
        format!("{ip}/32")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    fn hosts() -> (Host, Host) {
        let c = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: n1, address: 192.168.7.11, roles: [control-plane]}\n  - {name: n2, address: 192.168.7.12, roles: [worker]}\n",
        );
        (c.hosts[0].clone(), c.hosts[1].clone())
    }

    /// The cast as the plan places it, each pod with an address of its own.
    fn cast() -> [Pods; 7] {
        let (h1, h2) = hosts();
        let all = plan("v");
        let peer = |p: Planned| Peer {
            ip: format!(
                "10.88.{}.{}",
                u8::from(p.beside_server),
                all.iter().position(|q| *q == p).unwrap_or(99) + 2
            ),
            host: if p.beside_server { &h2 } else { &h1 }.clone(),
            name: p.name,
            namespace: p.namespace,
        };
        CASES.map(|(case, scope)| {
            let [server, client, peer_, outsider, elsewhere] =
                Part::ALL.map(|part| peer(placed("v", case, scope, part)));
            Pods {
                server,
                client,
                peer: peer_,
                outsider,
                elsewhere,
            }
        })
    }

    #[test]
    fn every_policy_is_a_valid_network_policy_named_as_its_case() -> Result<(), String> {
        let all = cases(&cast(), "10.88.0.0/16", Some("kubernetes.default"));
        let names: Vec<&str> = all.iter().map(|c| c.name).collect();
        assert_eq!(names, CASES.map(|(n, _)| n));
        for case in all {
            for p in case.policies {
                let np: NetworkPolicy = serde_json::from_value(p).map_err(|e| e.to_string())?;
                assert_eq!(np.metadata.name.as_deref(), Some(case.name));
            }
        }
        Ok(())
    }

    #[test]
    fn the_matrix_covers_each_kind_of_rule_on_both_placements() {
        let all = cases(&cast(), "10.88.0.0/16", Some("kubernetes.default"));
        let checks: Vec<&Check> = all.iter().flat_map(|c| &c.checks).collect();
        for placement in ["same node", "other node", "from its node", "to DNS"] {
            for allowed in [true, false] {
                let any = checks
                    .iter()
                    .any(|c| c.placement() == placement && c.allowed == allowed);
                // the node and DNS are only ever expected to get through
                assert_eq!(
                    any,
                    allowed || placement.starts_with("same") || placement.starts_with("other"),
                    "{placement} {allowed}"
                );
            }
        }
        // egress is decided on the client's node
        let egress = &all[6].checks[0];
        assert_eq!(egress.decided_on().name, "n1");
        assert_eq!(all[0].checks[0].decided_on().name, "n2");
        // the ipBlock's except names the outsider, who is refused
        let ip_block = &all[3];
        let From::Pod(outsider) = &ip_block.checks[2].from else {
            panic!("{:?}", ip_block.checks[2]);
        };
        assert_eq!(outsider.name, "verify-np-outsider");
        assert!(!ip_block.checks[2].allowed);
        assert!(
            ip_block.policies[0]
                .to_string()
                .contains(&format!("{}/32", outsider.ip))
        );
        // the kubelet's probe is checked where every pod is denied ingress
        assert_eq!(
            all[0].kubelet_probe.as_ref().map(|p| p.name.as_str()),
            Some("verify-np-peer")
        );
    }

    /// The cases run at once: no policy may select a pod another case sends from or to.
    #[test]
    fn no_case_s_policies_reach_another_case_s_pods() {
        let all = cases(&cast(), "10.88.0.0/16", Some("kubernetes.default"));
        for (case, (name, scope)) in all.iter().zip(CASES) {
            let selectors: Vec<&Value> = case
                .policies
                .iter()
                .map(|p| &p["spec"]["podSelector"])
                .collect();
            match scope {
                Scope::Server => {
                    assert_eq!(case.namespace, "v", "{name}");
                    assert!(
                        selectors.iter().all(|s| **s == server_selector(name)),
                        "{name}"
                    );
                }
                Scope::Namespace => assert_eq!(case.namespace, format!("v-{name}")),
            }
            for other in all.iter().filter(|o| o.name != case.name) {
                for check in &other.checks {
                    let mut ends = vec![];
                    if let From::Pod(p) = &check.from {
                        ends.push(p);
                    }
                    if let To::Pod { peer, .. } = &check.to {
                        ends.push(peer);
                    }
                    for pod in ends {
                        let selected = pod.namespace == case.namespace
                            && (scope == Scope::Namespace
                                || pod.name == format!("verify-np-{}", case.name));
                        assert!(
                            !selected,
                            "{} reaches {}'s {}",
                            case.name, other.name, pod.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_plan_places_each_pod_once_servers_beside_their_peers() {
        let all = plan("provision-verify-abcdef");
        // shared: client, peer, outsider and 5 servers; elsewhere; 2 namespaces of 4
        assert_eq!(all.len(), 8 + 1 + 2 * 4);
        for p in &all {
            let same = all
                .iter()
                .filter(|q| q.namespace == p.namespace && q.name == p.name)
                .count();
            assert_eq!(same, 1, "{p:?}");
            assert!(p.name.len() <= 63 && p.namespace.len() <= 63, "{p:?}");
        }
        let servers: Vec<&Planned> = all.iter().filter(|p| p.serves.is_some()).collect();
        assert_eq!(servers.len(), 7);
        assert!(servers.iter().all(|p| p.beside_server && !p.client_label));
        assert_eq!(
            namespaces("v"),
            [
                "v-peer",
                "v-default-deny-ingress",
                "v-default-deny-egress-but-dns"
            ]
        );
    }

    /// The policies are in force before the first check: a refused check proves a policy only
    /// where the same server is seen answering in its case.
    #[test]
    fn every_refused_check_has_an_allowed_one_to_the_same_server() {
        let server = |c: &Check| match &c.to {
            To::Pod { peer, .. } => Some(format!("{}/{}", peer.namespace, peer.name)),
            To::Dns(_) => None,
        };
        for case in cases(&cast(), "10.88.0.0/16", Some("kubernetes.default")) {
            for refused in case.checks.iter().filter(|c| !c.allowed) {
                assert!(
                    case.checks
                        .iter()
                        .any(|c| c.allowed && server(c) == server(refused)),
                    "{}: {}",
                    case.name,
                    refused.subject()
                );
            }
        }
    }

    /// Made before the pods run: all but the case that names a pod's address.
    #[test]
    fn policies_known_before_the_pods_run_are_those_the_cases_create() {
        let all = cases(&cast(), "10.88.0.0/16", None);
        for (case, (name, _)) in all.iter().zip(CASES) {
            assert!(!case.policies.is_empty(), "{name}");
            match policies(name, "10.88.0.0/16", None) {
                Some(early) => assert_eq!(early, case.policies, "{name}"),
                None => assert_eq!(name, "allow-from-ip-block"),
            }
        }
    }

    #[test]
    fn without_dns_the_egress_case_checks_no_lookup() {
        let all = cases(&cast(), "10.88.0.0/16", None);
        assert!(
            all.iter()
                .flat_map(|c| &c.checks)
                .all(|c| !matches!(c.to, To::Dns(_)))
        );
    }
}
