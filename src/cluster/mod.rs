//! The resolved cluster: every value derived from the inventory, once. Phases read it and never
//! re-derive. Resolution is also where the inventory's meaning is checked.

use crate::inventory::{Arch, CniName, KeyType, RuntimeClass, RuntimeName};
use crate::version::Version;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

mod eviction;
mod resolve;

pub use eviction::{Eviction, Threshold};

use resolve::overlaps;
pub use resolve::{is_dns_label, is_dns_subdomain, is_host_name, resolve};

pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
pub const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;
/// Where each node's own load balancer listens (loopback) when the control planes hold a VIP.
pub const LOCAL_API_PORT: u16 = 6444;

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    pub version: Version,
    pub endpoint: Endpoint,
    pub api_cert_sans: Vec<String>,
    pub pod_subnet: IpNet,
    pub service_subnet: IpNet,
    pub node_cidr_mask_size: u8,
    pub dns_domain: String,
    /// First address of the service subnet: the `kubernetes` Service.
    pub api_service_ip: IpAddr,
    /// Tenth address of the service subnet: cluster DNS.
    pub dns_service_ip: IpAddr,
    pub runtime: RuntimeName,
    pub runtime_classes: Vec<RuntimeClass>,
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    pub cni: CniName,
    pub overlay: crate::inventory::Overlay,
    pub vxlan: Vxlan,
    /// kube-router's firewall on every node (`spec.cni.networkPolicy`).
    pub policy_engine: bool,
    pub bundle: BundleSource,
    /// Component versions the inventory sets instead of the catalog's.
    pub bundle_versions: BTreeMap<String, String>,
    pub pki: Pki,
    /// Scheduled etcd snapshots on the control planes, when asked for.
    pub etcd_snapshots: Option<SnapshotSchedule>,
    /// The kubelets' hard eviction thresholds.
    pub eviction: Eviction,
    pub hosts: Vec<Host>,
    /// The control plane this run reads the cluster's material from and the others join
    /// through: chosen once per run among the hosts (`crate::settle::seed`); None until then, which
    /// means the inventory's first control plane.
    #[serde(skip)]
    pub seed: Option<String>,
}

/// `spec.etcd.snapshots`, defaults filled in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotSchedule {
    pub schedule: String,
    pub keep: u32,
    pub dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pki {
    pub key_type: KeyType,
    pub cert_validity_days: u32,
    pub ca_validity_days: u32,
    pub external_ca: Option<ExternalCa>,
}

/// A user-supplied cluster CA, read from the operator's disk when the inventory is resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalCa {
    pub cert_file: PathBuf,
    pub key_file: Option<PathBuf>,
    #[serde(skip)]
    pub cert_pem: String,
    #[serde(skip)]
    pub key_pem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The control planes hold `host` themselves (`controlPlaneEndpoint: {vip: ...}`).
    pub vip: Option<Vip>,
}

/// A virtual API address that keepalived (VRRP) moves to a healthy control plane.
#[derive(Debug, Clone, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    /// None: the interface holding each control plane's address.
    pub interface: Option<String>,
    pub router_id: u8,
}

impl Endpoint {
    pub fn url(&self) -> String {
        https_url(&self.host, self.port)
    }
}

/// `https://host:port`, an IPv6 address in brackets.
pub fn https_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase", tag = "source")]
pub enum BundleSource {
    Upstream,
    Mirror {
        url: String,
        ca_file: Option<PathBuf>,
    },
    Dir {
        path: PathBuf,
    },
}

/// The built-in network's VXLAN overlay.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Vxlan {
    pub vni: u32,
    pub port: u16,
    /// None: the node interface's MTU minus 50, found on each node.
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub control_plane: bool,
    pub worker: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    pub pod_cidr: IpNet,
    pub arch: Arch,
    pub ssh: SshTarget,
}

impl Host {
    pub fn roles(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.control_plane {
            r.push("control-plane");
        }
        if self.worker {
            r.push("worker");
        }
        r
    }
}

/// How to reach one host over SSH, with every default filled in.
#[derive(Debug, Clone, Serialize)]
pub struct SshTarget {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// None: try ssh-agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa.
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: PathBuf,
    pub bastion: Option<Bastion>,
    pub sudo: bool,
    pub connect_timeout_seconds: u64,
    pub command_timeout_seconds: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bastion {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identity_file: Option<PathBuf>,
}

impl Cluster {
    pub fn control_planes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.control_plane)
    }

    /// The control plane that holds the CAs, that `init` acts on and that the others join
    /// through: the one this run chose (a healthy control plane that has the cluster), else the
    /// inventory's first. No control plane is special for good: when it leaves, another is.
    pub fn seed_control_plane(&self) -> Option<&Host> {
        let chosen = self.seed.as_deref().and_then(|name| self.host(name));
        chosen.or_else(|| self.control_planes().next())
    }

    pub fn is_seed_control_plane(&self, host: &Host) -> bool {
        self.seed_control_plane()
            .is_some_and(|f| f.name == host.name)
    }

    /// The API server the nodes' own agents (kubelet, kube-proxy, the policy engine) use: the
    /// node's local load balancer with a VIP, so that they follow every healthy control plane
    /// rather than the VIP's failover alone; otherwise the cluster's endpoint.
    pub fn node_api_url(&self) -> String {
        match self.endpoint.vip {
            Some(_) => https_url("127.0.0.1", LOCAL_API_PORT),
            None => self.endpoint.url(),
        }
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The pod CIDRs the cluster's Nodes hold (`held`, by Node name) win over the blocks the
    /// inventory's order gives: Kubernetes never changes a Node's, so a host removed from the
    /// inventory or added in its middle must not move another's. A host that is not a Node yet
    /// keeps its block unless a Node holds it, else gets the first free one. Returns the hosts
    /// whose block differs from the inventory's.
    pub fn keep_pod_cidrs(
        &mut self,
        held: &BTreeMap<String, IpNet>,
    ) -> Result<Vec<String>, String> {
        let mut moved = Vec::new();
        // every held block stays taken, a Node gone from the inventory's too
        let mut taken: Vec<IpNet> = held.values().copied().collect();
        let mut clashing = Vec::new();
        for (i, h) in self.hosts.iter_mut().enumerate() {
            match held.get(&h.name) {
                Some(c) if *c != h.pod_cidr => {
                    h.pod_cidr = *c;
                    moved.push(h.name.clone());
                }
                Some(_) => {}
                None => clashing.push(i),
            }
        }
        // newcomers that clash with no held block keep theirs; the others come after them
        clashing.retain(|&i| {
            let block = self.hosts[i].pod_cidr;
            let clash = held.values().any(|c| overlaps(*c, block));
            if !clash {
                taken.push(block);
            }
            clash
        });
        let blocks = self
            .pod_subnet
            .subnets(self.node_cidr_mask_size)
            .map_err(|e| e.to_string())?;
        let mut free = blocks.filter(|b| !taken.iter().any(|t| overlaps(*t, *b)));
        for i in clashing {
            let h = &mut self.hosts[i];
            let b = free.next().ok_or_else(|| {
                format!(
                    "no free /{} block of the pod subnet {} for {}: the cluster's Nodes hold the others (kubectl get nodes -o custom-columns=NAME:.metadata.name,CIDR:.spec.podCIDR); delete the Nodes of hosts that are gone, or use a larger pod subnet",
                    self.node_cidr_mask_size, self.pod_subnet, h.name
                )
            })?;
            h.pod_cidr = b;
            moved.push(h.name.clone());
        }
        Ok(moved)
    }
}

/// Tests: the cluster a test's own inventory text resolves to (a problem in it is the test's
/// mistake, reported with the file's problems).
#[cfg(test)]
pub(crate) fn from_text(text: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
    let file = dir.path().join("inventory.yaml");
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("writing the test inventory: {e}"));
    let loaded = crate::inventory::load(&file).unwrap_or_else(|p| panic!("{p}"));
    resolve(&loaded)
        .map(|(c, _)| c)
        .unwrap_or_else(|p| panic!("{p}"))
}
