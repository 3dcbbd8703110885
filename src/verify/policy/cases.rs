//! The NetworkPolicy matrix: each case is a set of policies and what must then get through and
//! what must not, between pods on the same node and on another node. Pure data, built from the
//! running test pods, so what is asserted can be read (and tested) without a cluster.

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
    pub policies: Vec<Value>,
    pub checks: Vec<Check>,
    /// After the checks: the same-node client's readiness probe (the kubelet, from its node)
    /// still passes.
    pub kubelet_probe: bool,
}

/// The pods of the matrix. `server` and `peer` share a node; `client` and `outsider` are on
/// another. `client`, `peer` and `elsewhere` carry the client label; `elsewhere` lives in the
/// second namespace (labelled `PEER_NAMESPACE_LABEL`).
pub struct Pods {
    pub server: Peer,
    pub client: Peer,
    pub peer: Peer,
    pub outsider: Peer,
    pub elsewhere: Peer,
}

pub const CLIENT_LABEL: &str = "provision.io/role";
pub const PEER_NAMESPACE_LABEL: &str = "provision.io/verify-peer";

fn policy(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

/// The server alone (its node's test pod).
fn server_selector(p: &Pods) -> Value {
    json!({"matchLabels": {"provision.io/node": p.server.host.name, "app": super::super::APP_LABEL}})
}

/// The matrix, in order. `pod_subnet` is the cluster's; `dns_name` what a DNS check looks up
/// (None: DNS does not answer in this cluster, so the egress case checks no lookup).
pub fn cases(p: &Pods, pod_subnet: &str, dns_name: Option<&str>) -> Vec<Case> {
    let (s, a, b, o, e) = (&p.server, &p.client, &p.peer, &p.outsider, &p.elsewhere);
    let clients = json!({"podSelector": {"matchLabels": {CLIENT_LABEL: "client"}}});
    let mut egress_checks = vec![
        Check::pod(a, s, POD_PORT, false).egress(),
        Check::pod(b, s, POD_PORT, false).egress(),
        Check::pod(o, s, POD_PORT, true).egress(),
    ];
    if let Some(name) = dns_name {
        egress_checks.push(Check {
            from: From::Pod(a.clone()),
            to: To::Dns(name.to_string()),
            allowed: true,
            egress: true,
        });
    }
    vec![
        Case {
            name: "default-deny-ingress",
            policies: vec![policy(
                "default-deny-ingress",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )],
            checks: vec![
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
            ],
            kubelet_probe: true,
        },
        Case {
            name: "allow-from-pod-selector",
            policies: vec![policy(
                "allow-from-pod-selector",
                json!({"podSelector": server_selector(p), "policyTypes": ["Ingress"],
                       "ingress": [{"from": [clients]}]}),
            )],
            checks: vec![
                Check::pod(a, s, POD_PORT, true),
                Check::pod(b, s, POD_PORT, true),
                Check::pod(o, s, POD_PORT, false),
                // the same labels in another namespace do not match a podSelector alone
                Check::pod(e, s, POD_PORT, false),
            ],
            kubelet_probe: false,
        },
        Case {
            name: "allow-from-namespace-selector",
            policies: vec![policy(
                "allow-from-namespace-selector",
                json!({"podSelector": server_selector(p), "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"namespaceSelector":
                           {"matchLabels": {PEER_NAMESPACE_LABEL: "true"}}}]}]}),
            )],
            checks: vec![
                Check::pod(e, s, POD_PORT, true),
                Check::pod(a, s, POD_PORT, false),
            ],
            kubelet_probe: false,
        },
        Case {
            name: "allow-from-ip-block",
            policies: vec![policy(
                "allow-from-ip-block",
                json!({"podSelector": server_selector(p), "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"ipBlock":
                           {"cidr": pod_subnet, "except": [host_cidr(&o.ip)]}}]}]}),
            )],
            checks: vec![
                Check::pod(a, s, POD_PORT, true),
                Check::pod(b, s, POD_PORT, true),
                Check::pod(o, s, POD_PORT, false),
            ],
            kubelet_probe: false,
        },
        Case {
            name: "allow-named-port",
            policies: vec![policy(
                "allow-named-port",
                json!({"podSelector": server_selector(p), "policyTypes": ["Ingress"],
                       "ingress": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}),
            )],
            checks: vec![
                Check::pod(a, s, POD_PORT, true),
                Check::pod(a, s, ALT_PORT, false),
                Check::pod(b, s, ALT_PORT, false),
            ],
            kubelet_probe: false,
        },
        Case {
            name: "allow-port-range",
            policies: vec![policy(
                "allow-port-range",
                json!({"podSelector": server_selector(p), "policyTypes": ["Ingress"],
                       "ingress": [{"ports": [{"port": ALT_PORT, "endPort": ALT_PORT + 9,
                                               "protocol": "TCP"}]}]}),
            )],
            checks: vec![
                Check::pod(a, s, ALT_PORT, true),
                Check::pod(b, s, ALT_PORT, true),
                Check::pod(a, s, POD_PORT, false),
            ],
            kubelet_probe: false,
        },
        Case {
            name: "default-deny-egress-but-dns",
            policies: vec![policy(
                "default-deny-egress-but-dns",
                json!({"podSelector": {"matchLabels": {CLIENT_LABEL: "client"}},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{"namespaceSelector": {"matchLabels":
                                {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                }]}),
            )],
            checks: egress_checks,
            kubelet_probe: false,
        },
    ]
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

    fn peer(name: &str, ns: &str, host: &Host, ip: &str) -> Peer {
        Peer {
            name: name.into(),
            namespace: ns.into(),
            host: host.clone(),
            ip: ip.into(),
        }
    }

    fn pods() -> Result<Pods, String> {
        let c = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: n1, address: 192.168.7.11, roles: [control-plane]}\n  - {name: n2, address: 192.168.7.12, roles: [worker]}\n",
        );
        let (h1, h2) = (c.hosts[0].clone(), c.hosts[1].clone());
        Ok(Pods {
            server: peer("verify-n2", "v", &h2, "10.88.1.2"),
            client: peer("verify-n1", "v", &h1, "10.88.0.2"),
            peer: peer("verify-np-peer", "v", &h2, "10.88.1.3"),
            outsider: peer("verify-np-outsider", "v", &h1, "10.88.0.3"),
            elsewhere: peer("verify-np-elsewhere", "v-peer", &h2, "10.88.1.4"),
        })
    }

    #[test]
    fn every_policy_is_a_valid_network_policy() -> Result<(), String> {
        for case in cases(&pods()?, "10.88.0.0/16", Some("kubernetes.default")) {
            for p in case.policies {
                let np: NetworkPolicy = serde_json::from_value(p).map_err(|e| e.to_string())?;
                assert_eq!(np.metadata.name.as_deref(), Some(case.name));
            }
        }
        Ok(())
    }

    #[test]
    fn the_matrix_covers_each_kind_of_rule_on_both_placements() -> Result<(), String> {
        let all = cases(&pods()?, "10.88.0.0/16", Some("kubernetes.default"));
        let names: Vec<&str> = all.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "default-deny-ingress",
                "allow-from-pod-selector",
                "allow-from-namespace-selector",
                "allow-from-ip-block",
                "allow-named-port",
                "allow-port-range",
                "default-deny-egress-but-dns"
            ]
        );
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
        assert!(ip_block.policies[0].to_string().contains("10.88.0.3/32"));
        assert!(ip_block.checks.iter().any(
            |c| !c.allowed && matches!(&c.from, From::Pod(p) if p.name == "verify-np-outsider")
        ));
        Ok(())
    }

    #[test]
    fn without_dns_the_egress_case_checks_no_lookup() -> Result<(), String> {
        let all = cases(&pods()?, "10.88.0.0/16", None);
        assert!(
            all.iter()
                .flat_map(|c| &c.checks)
                .all(|c| !matches!(c.to, To::Dns(_)))
        );
        Ok(())
    }
}
