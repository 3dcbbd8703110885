//! The resolved cluster: every value derived from the inventory, once. Phases read it and never
//! re-derive. Resolution is also where the inventory's meaning is checked.

use crate::inventory::Arch;
use crate::inventory::{
    self, BastionSpec, CniName, KeyType, Loaded, Problem, Problems, Role, RuntimeClass,
    RuntimeName, Severity, SshSpec, SudoMode,
};
use crate::version::{CATALOG_MINORS, Version};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

/// The catalog's oldest and newest minors: the supported range.
const OLDEST_MINOR: u32 = CATALOG_MINORS[0];
const NEWEST_MINOR: u32 = CATALOG_MINORS[CATALOG_MINORS.len() - 1];

pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
pub const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;

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
    pub bundle: BundleSource,
    /// Component versions the inventory sets instead of the catalog's.
    pub bundle_versions: BTreeMap<String, String>,
    pub pki: Pki,
    pub hosts: Vec<Host>,
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
}

impl Endpoint {
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
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

    /// The control plane that holds the CAs and that the API is reached through.
    pub fn first_control_plane(&self) -> Option<&Host> {
        self.control_planes().next()
    }

    pub fn is_first_control_plane(&self, host: &Host) -> bool {
        self.first_control_plane()
            .is_some_and(|f| f.name == host.name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// Checks the inventory's meaning and derives the cluster. Warnings come back with the cluster.
pub fn resolve(loaded: &Loaded) -> Result<(Cluster, Problems), Problems> {
    let mut r = Resolver {
        loaded,
        items: Vec::new(),
    };
    let cluster = r.run();
    let problems = Problems {
        file: loaded.file.clone(),
        items: r.items,
    };
    match cluster {
        Some(c) if !problems.has_errors() => Ok((c, problems)),
        _ => Err(problems),
    }
}

struct Resolver<'a> {
    loaded: &'a Loaded,
    items: Vec<Problem>,
}

impl Resolver<'_> {
    fn error(&mut self, path: &str, message: String, hint: &str) {
        let p = self.loaded.problem(Severity::Error, path, message, hint);
        self.items.push(p);
    }

    fn warning(&mut self, path: &str, message: String, hint: &str) {
        let p = self.loaded.problem(Severity::Warning, path, message, hint);
        self.items.push(p);
    }

    fn run(&mut self) -> Option<Cluster> {
        let inv = &self.loaded.inventory;
        let spec = &inv.spec;
        if inv.api_version != inventory::API_VERSION {
            self.error(
                "apiVersion",
                format!("\"{}\" is not supported", inv.api_version),
                &format!("write apiVersion: {}", inventory::API_VERSION),
            );
        }
        if inv.kind != inventory::KIND {
            self.error(
                "kind",
                format!("\"{}\" is not supported", inv.kind),
                &format!("write kind: {}", inventory::KIND),
            );
        }
        if !is_dns_label(&inv.metadata.name) {
            self.error(
                "metadata.name",
                format!("\"{}\" is not a valid cluster name", inv.metadata.name),
                "use lowercase letters, digits and '-', at most 63 characters, e.g. prod-eu1",
            );
        }
        let version = self.version();
        let (pod_subnet, service_subnet) = self.subnets();
        let dns_domain = spec
            .networking
            .dns_domain
            .clone()
            .unwrap_or_else(|| DEFAULT_DNS_DOMAIN.to_string());
        if !is_dns_subdomain(&dns_domain) {
            self.error(
                "spec.networking.dnsDomain",
                format!("\"{dns_domain}\" is not a DNS domain"),
                "use lowercase labels separated by dots, e.g. cluster.local",
            );
        }
        let bundle = self.bundle();
        let pki = self.pki();
        let runtime_classes = self.runtime_classes();
        let hosts = self.hosts(pod_subnet);
        let endpoint = self.endpoint(&hosts);

        for (i, san) in spec.api_server.cert_sans.iter().enumerate() {
            if san.parse::<IpAddr>().is_err() && !is_dns_subdomain(san) && !is_wildcard_dns(san) {
                self.error(
                    &format!("spec.apiServer.certSANs[{i}]"),
                    format!("\"{san}\" is neither an IP address nor a DNS name"),
                    "list IP addresses or DNS names, e.g. api.example.com",
                );
            }
        }
        if let (Some(pod), Some(svc)) = (pod_subnet, service_subnet) {
            self.check_overlaps(pod, svc, &hosts, endpoint.as_ref());
        }

        if let Some(v) = &version {
            self.check_cri_o_release(v);
        }

        let (pod_subnet, service_subnet, endpoint, version) =
            (pod_subnet?, service_subnet?, endpoint?, version?);
        let api_service_ip = nth_address(service_subnet, 1)?;
        let dns_service_ip = nth_address(service_subnet, 10)?;
        Some(Cluster {
            name: inv.metadata.name.clone(),
            version,
            endpoint,
            api_cert_sans: spec.api_server.cert_sans.clone(),
            pod_subnet,
            service_subnet,
            node_cidr_mask_size: self.node_mask(pod_subnet),
            dns_domain,
            api_service_ip,
            dns_service_ip,
            runtime: spec.runtime.name,
            runtime_classes,
            registry_mirrors: spec.runtime.registry_mirrors.clone(),
            cni: spec.cni.name,
            overlay: spec.cni.overlay,
            vxlan: self.vxlan(),
            bundle: bundle?,
            bundle_versions: self.bundle_versions(),
            pki: pki?,
            hosts: hosts.into_iter().map(|(_, h)| h).collect(),
        })
    }

    fn version(&mut self) -> Option<Version> {
        let spec = &self.loaded.inventory.spec;
        let Some(text) = &spec.kubernetes_version else {
            return Some(Version::default_version());
        };
        let path = "spec.kubernetesVersion";
        match Version::parse(text) {
            Err(e) => {
                self.error(
                    path,
                    e,
                    "write a release like 1.37.2 (1.35, 1.36 and 1.37 are pinned)",
                );
                None
            }
            Ok(v) if v.major != 1 || v.minor < OLDEST_MINOR => {
                self.error(
                    path,
                    format!("Kubernetes {v} is not supported (out of upstream support)"),
                    "use 1.35, 1.36 or 1.37",
                );
                None
            }
            Ok(v) if v.minor > NEWEST_MINOR => {
                self.error(
                    path,
                    format!("Kubernetes {v} is newer than this release of provision knows"),
                    "use 1.37 or older, or upgrade provision",
                );
                None
            }
            Ok(v) => Some(v),
        }
    }

    fn subnet(&mut self, path: &str, given: Option<&String>, default: &str) -> Option<IpNet> {
        let text = given.map(String::as_str).unwrap_or(default);
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    path,
                    format!("\"{text}\" has host bits set"),
                    &format!("write the network address: {}", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(
                    path,
                    format!("\"{text}\" is not a CIDR"),
                    "write an address and a prefix length, e.g. 10.244.0.0/16",
                );
                None
            }
        }
    }

    fn subnets(&mut self) -> (Option<IpNet>, Option<IpNet>) {
        let net = self.loaded.inventory.spec.networking.clone();
        let pod = self.subnet(
            "spec.networking.podSubnet",
            net.pod_subnet.as_ref(),
            DEFAULT_POD_SUBNET,
        );
        let svc = self.subnet(
            "spec.networking.serviceSubnet",
            net.service_subnet.as_ref(),
            DEFAULT_SERVICE_SUBNET,
        );
        let svc = svc.and_then(|s| {
            let (min_prefix, max_prefix) = match s {
                IpNet::V4(_) => (12, 28),
                IpNet::V6(_) => (108, 124),
            };
            if s.prefix_len() < min_prefix {
                self.error(
                    "spec.networking.serviceSubnet",
                    format!("{s} is too large: kube-apiserver allows at most a /{min_prefix}"),
                    &format!("use a prefix of /{min_prefix} or longer, e.g. 10.96.0.0/12"),
                );
                None
            } else if s.prefix_len() > max_prefix {
                self.error(
                    "spec.networking.serviceSubnet",
                    format!(
                        "{s} is too small: it must hold the API (1st) and DNS (10th) addresses"
                    ),
                    &format!("use a prefix of /{max_prefix} or shorter"),
                );
                None
            } else {
                Some(s)
            }
        });
        if let (Some(p), Some(s)) = (pod, svc)
            && matches!(p, IpNet::V4(_)) != matches!(s, IpNet::V4(_))
        {
            self.error(
                "spec.networking.serviceSubnet",
                format!("{s} and the pod subnet {p} are of different address families"),
                "use IPv4 for both, or IPv6 for both (dual-stack is not supported yet)",
            );
            return (pod, None);
        }
        (pod, svc)
    }

    fn node_mask(&self, pod: IpNet) -> u8 {
        self.loaded
            .inventory
            .spec
            .networking
            .node_cidr_mask_size
            .unwrap_or(match pod {
                IpNet::V4(_) => 24.max(pod.prefix_len()),
                IpNet::V6(_) => 64.max(pod.prefix_len()),
            })
    }

    fn bundle(&mut self) -> Option<BundleSource> {
        let b = self.loaded.inventory.spec.bundle.clone();
        match (&b.mirror, &b.dir) {
            (Some(_), Some(_)) => {
                self.error(
                    "spec.bundle",
                    "names both a mirror and a dir".into(),
                    "keep one: mirror (a base URL) or dir (an unpacked bundle)",
                );
                None
            }
            (Some(url), None) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    self.error(
                        "spec.bundle.mirror",
                        format!("\"{url}\" is not an http(s) URL"),
                        "write a base URL such as https://mirror.example.com/k8s",
                    );
                    return None;
                }
                Some(BundleSource::Mirror {
                    url: url.trim_end_matches('/').to_string(),
                    ca_file: b.ca_file.as_deref().map(|p| self.loaded.resolve_path(p)),
                })
            }
            (None, Some(dir)) => {
                if b.ca_file.is_some() {
                    self.error(
                        "spec.bundle.caFile",
                        "applies to a mirror only".into(),
                        "remove caFile, or use mirror:",
                    );
                }
                Some(BundleSource::Dir {
                    path: self.loaded.resolve_path(dir),
                })
            }
            (None, None) => {
                if b.ca_file.is_some() {
                    self.error(
                        "spec.bundle.caFile",
                        "applies to a mirror only".into(),
                        "remove caFile, or add mirror:",
                    );
                }
                Some(BundleSource::Upstream)
            }
        }
    }

    fn vxlan(&mut self) -> Vxlan {
        let v = self.loaded.inventory.spec.cni.vxlan.clone();
        let vni = v.vni.unwrap_or(1);
        if !(1..=16_777_215).contains(&vni) {
            self.error(
                "spec.cni.vxlan.vni",
                format!("{vni} is not a VXLAN network identifier"),
                "use 1 to 16777215",
            );
        }
        let port = v.port.unwrap_or(4789);
        if port == 0 {
            self.error(
                "spec.cni.vxlan.port",
                "0 is not a UDP port".into(),
                "use 4789 (the IANA port) or another free port",
            );
        }
        if let Some(mtu) = v.mtu
            && !(1280..=9000).contains(&mtu)
        {
            self.error(
                "spec.cni.vxlan.mtu",
                format!("{mtu} is outside 1280-9000"),
                "leave it out to use the node interface's MTU minus 50",
            );
        }
        Vxlan {
            vni,
            port,
            mtu: v.mtu,
        }
    }

    /// CRI-O follows Kubernetes' minor: one without a pinned CRI-O needs a version named (or a
    /// dir bundle that holds one).
    fn check_cri_o_release(&mut self, version: &Version) {
        let spec = &self.loaded.inventory.spec;
        if spec.runtime.name == RuntimeName::CriO
            && crate::catalog::default_version("cri-o", version).is_none()
            && !spec.bundle.versions.contains_key("cri-o")
            && spec.bundle.dir.is_none()
        {
            self.error(
                "spec.runtime.name",
                format!("the catalog pins no CRI-O release for Kubernetes {version}"),
                "use Kubernetes 1.36 or 1.35 with CRI-O, set spec.bundle.versions.cri-o, or use containerd",
            );
        }
    }

    fn bundle_versions(&mut self) -> BTreeMap<String, String> {
        let versions = self.loaded.inventory.spec.bundle.versions.clone();
        for (name, v) in &versions {
            if crate::catalog::component(name).is_none() {
                let names: Vec<&str> = crate::catalog::COMPONENTS.iter().map(|c| c.name).collect();
                self.error(
                    &format!("spec.bundle.versions.{name}"),
                    format!("\"{name}\" is not a component"),
                    &format!("components are: {}", names.join(", ")),
                );
            } else if v.trim().is_empty() || v.contains(char::is_whitespace) || v.contains('/') {
                self.error(
                    &format!("spec.bundle.versions.{name}"),
                    format!("\"{v}\" is not a version"),
                    "write the release's version, e.g. 3.5.33",
                );
            }
        }
        versions
    }

    fn pki(&mut self) -> Option<Pki> {
        let spec = self.loaded.inventory.spec.pki.clone();
        let days = |s: &mut Self, v: Option<u32>, default: u32, field: &str, min: u32, max: u32| {
            match v {
                None => Some(default),
                Some(d) if d >= min && d <= max => Some(d),
                Some(d) => {
                    s.error(
                    &format!("spec.pki.{field}"),
                    format!("{d} days is out of range"),
                    &format!(
                        "use {min} to {max} days (certificates within {} days of their end are renewed on every run)",
                        crate::x509::RENEW_BEFORE_DAYS
                    ),
                );
                    None
                }
            }
        };
        // leaves closer than RENEW_BEFORE_DAYS to their end are re-issued: a shorter lifetime
        // would re-issue every certificate on every run
        let min_leaf = crate::x509::RENEW_BEFORE_DAYS as u32 + 1;
        let cert_days = days(
            self,
            spec.cert_validity_days,
            365,
            "certValidityDays",
            min_leaf,
            3650,
        );
        let ca_days = days(
            self,
            spec.ca_validity_days,
            3650,
            "caValidityDays",
            min_leaf,
            36500,
        );
        if let (Some(c), Some(ca)) = (cert_days, ca_days)
            && c > ca
        {
            self.error(
                "spec.pki.certValidityDays",
                format!("leaves ({c} days) would outlive their CA ({ca} days)"),
                "make certValidityDays shorter than caValidityDays",
            );
        }
        let external_ca = match &spec.external_ca {
            None => None,
            Some(e) => {
                let cert_file = self.loaded.resolve_path(&e.cert_file);
                let key_file = e.key_file.as_deref().map(|k| self.loaded.resolve_path(k));
                let read = |s: &mut Self, path: &PathBuf, field: &str| match std::fs::read_to_string(
                    path,
                ) {
                    Ok(t) => Some(t),
                    Err(err) => {
                        s.error(
                            &format!("spec.pki.externalCA.{field}"),
                            format!("cannot read {}: {err}", path.display()),
                            "give the path of a PEM file (relative paths start at the inventory's directory)",
                        );
                        None
                    }
                };
                let cert_pem = read(self, &cert_file, "certFile");
                let key_pem = match &key_file {
                    Some(k) => read(self, k, "keyFile").map(Some),
                    None => Some(None),
                };
                match (cert_pem, key_pem) {
                    (Some(cert_pem), Some(key_pem)) => {
                        if let Err(e) =
                            crate::x509::check_external_ca(&cert_pem, key_pem.as_deref())
                        {
                            self.error(
                                "spec.pki.externalCA",
                                e,
                                "certFile must be a CA certificate (PEM) and keyFile its private key",
                            );
                        }
                        Some(ExternalCa {
                            cert_file,
                            key_file,
                            cert_pem,
                            key_pem,
                        })
                    }
                    _ => None,
                }
            }
        };
        Some(Pki {
            key_type: spec.key_type,
            cert_validity_days: cert_days?,
            ca_validity_days: ca_days?,
            external_ca,
        })
    }

    fn runtime_classes(&mut self) -> Vec<RuntimeClass> {
        let rt = &self.loaded.inventory.spec.runtime;
        let mut classes = rt.runtime_classes.clone();
        classes.sort();
        if classes.windows(2).any(|w| w[0] == w[1]) {
            self.error(
                "spec.runtime.runtimeClasses",
                "lists a runtime class twice".into(),
                "list each of gvisor and kata at most once",
            );
        }
        classes.dedup();
        if rt.name == RuntimeName::CriO && classes.contains(&RuntimeClass::Gvisor) {
            self.error(
                "spec.runtime.runtimeClasses",
                "gvisor is offered with containerd only".into(),
                "use runtime name: containerd, or drop gvisor",
            );
        }
        for (host, mirrors) in &rt.registry_mirrors {
            for (i, m) in mirrors.iter().enumerate() {
                if !m.starts_with("https://") && !m.starts_with("http://") {
                    self.error(
                        &format!("spec.runtime.registryMirrors.{host}[{i}]"),
                        format!("\"{m}\" is not an http(s) URL"),
                        "write the mirror endpoint, e.g. https://mirror.example.com",
                    );
                }
            }
        }
        classes
    }

    fn ssh_target(&mut self, i: usize, address: &str) -> SshTarget {
        let spec = &self.loaded.inventory.spec;
        let (d, h): (&SshSpec, &SshSpec) = (&spec.ssh, &spec.hosts[i].ssh);
        if h.known_hosts_file.is_some() {
            self.error(
                &format!("spec.hosts[{i}].ssh.knownHostsFile"),
                "is set for the whole inventory only".into(),
                "move knownHostsFile to spec.ssh",
            );
        }
        let user = h
            .user
            .clone()
            .or_else(|| d.user.clone())
            .unwrap_or_else(|| "root".into());
        let sudo = match h.sudo.or(d.sudo).unwrap_or_default() {
            SudoMode::Auto => user != "root",
            SudoMode::Always => true,
            SudoMode::Never => false,
        };
        // where a setting came from: the host's own ssh section, or the inventory-wide one
        let origin = |host_has: bool, field: &str| {
            if host_has {
                format!("spec.hosts[{i}].ssh.{field}")
            } else {
                format!("spec.ssh.{field}")
            }
        };
        let port = h.port.or(d.port).unwrap_or(22);
        if port == 0 {
            self.error(
                &origin(h.port.is_some(), "port"),
                "port 0 is not a port".into(),
                "use 1-65535, usually 22",
            );
        }
        let identity = h.identity_file.as_ref().or(d.identity_file.as_ref());
        let identity_path = match identity {
            Some(p) => {
                let path = self.loaded.resolve_path(p);
                if !path.is_file() {
                    self.error(
                        &origin(h.identity_file.is_some(), "identityFile"),
                        format!("{} does not exist", path.display()),
                        "give the path of a private key (relative paths start at the inventory's directory), or leave it out to use ssh-agent",
                    );
                }
                Some(path)
            }
            None => None,
        };
        let bastion = h
            .bastion
            .as_ref()
            .or(d.bastion.as_ref())
            .map(|b: &BastionSpec| Bastion {
                address: b.address.clone(),
                port: b.port.unwrap_or(22),
                user: b.user.clone().unwrap_or_else(|| user.clone()),
                identity_file: b
                    .identity_file
                    .as_deref()
                    .map(|p| self.loaded.resolve_path(p))
                    .or_else(|| identity_path.clone()),
            });
        SshTarget {
            address: address.to_string(),
            port,
            user,
            identity_file: identity_path,
            known_hosts_file: d
                .known_hosts_file
                .as_deref()
                .map(|p| self.loaded.resolve_path(p))
                .unwrap_or_else(|| inventory::expand_home("~/.ssh/known_hosts")),
            bastion,
            sudo,
            connect_timeout_seconds: h
                .connect_timeout_seconds
                .or(d.connect_timeout_seconds)
                .unwrap_or(10),
            command_timeout_seconds: h
                .command_timeout_seconds
                .or(d.command_timeout_seconds)
                .unwrap_or(300),
        }
    }

    /// Hosts with their index in the inventory (for error paths).
    fn hosts(&mut self, pod_subnet: Option<IpNet>) -> Vec<(usize, Host)> {
        let specs = self.loaded.inventory.spec.hosts.clone();
        if specs.is_empty() {
            self.error(
                "spec.hosts",
                "lists no hosts".into(),
                "add at least one host with roles: [control-plane]",
            );
            return Vec::new();
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut addresses: HashMap<String, usize> = HashMap::new();
        let mut hosts = Vec::new();
        for (i, h) in specs.iter().enumerate() {
            let at = |f: &str| format!("spec.hosts[{i}].{f}");
            if !is_dns_subdomain(&h.name) {
                self.error(
                    &at("name"),
                    format!("\"{}\" is not a valid node name", h.name),
                    "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (RFC 1123)",
                );
            }
            if let Some(first) = names.insert(h.name.clone(), i) {
                self.error(
                    &at("name"),
                    format!("\"{}\" is already the name of hosts[{first}]", h.name),
                    "give every host its own name",
                );
            }
            let address = h.address.trim().to_string();
            if address.parse::<IpAddr>().is_err() && !is_host_name(&address) {
                self.error(
                    &at("address"),
                    format!("\"{}\" is not an IP address or host name", h.address),
                    "write the address SSH and the cluster use for this host, e.g. 10.244.1.11",
                );
            }
            let key = address
                .parse::<IpAddr>()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| address.to_lowercase());
            if let Some(first) = addresses.insert(key, i) {
                self.error(
                    &at("address"),
                    format!("{} is already the address of hosts[{first}]", h.address),
                    "every host needs its own address",
                );
            }
            if h.roles.is_empty() {
                self.error(
                    &at("roles"),
                    "is empty".into(),
                    "give the host control-plane, worker, or both",
                );
            }
            for (k, v) in &h.labels {
                if let Err(e) = check_label(k, v) {
                    self.error(&format!("spec.hosts[{i}].labels.{k}"), e, "see Kubernetes label syntax: [prefix/]name, 63 characters at most, values alike");
                }
            }
            for (t, taint) in h.taints.iter().enumerate() {
                if let Err(e) = check_taint(taint) {
                    self.error(
                        &format!("spec.hosts[{i}].taints[{t}]"),
                        e,
                        "write key[=value]:Effect, Effect one of NoSchedule, PreferNoSchedule, NoExecute",
                    );
                }
            }
            let ssh = self.ssh_target(i, &address);
            hosts.push((
                i,
                Host {
                    name: h.name.clone(),
                    address,
                    control_plane: h.roles.contains(&Role::ControlPlane),
                    worker: h.roles.contains(&Role::Worker),
                    labels: h.labels.clone(),
                    taints: h.taints.clone(),
                    pod_cidr: IpNet::default(),
                    arch: h.arch.unwrap_or(Arch::Amd64),
                    ssh,
                },
            ));
        }
        let cps = hosts.iter().filter(|(_, h)| h.control_plane).count();
        if cps == 0 {
            self.error(
                "spec.hosts",
                "no host has the control-plane role".into(),
                "give at least one host roles: [control-plane]",
            );
        } else if cps % 2 == 0 {
            self.warning(
                "spec.hosts",
                format!(
                    "{cps} control planes: etcd tolerates no more failures than with {}",
                    cps - 1
                ),
                "use an odd number of control planes (1, 3 or 5)",
            );
        }
        if let Some(pod) = pod_subnet {
            self.assign_pod_cidrs(pod, &specs, &mut hosts);
        }
        hosts
    }

    /// Each node gets its own block of the pod subnet: the one the inventory names, or the next
    /// free one in inventory order.
    fn assign_pod_cidrs(
        &mut self,
        pod: IpNet,
        specs: &[inventory::HostSpec],
        hosts: &mut [(usize, Host)],
    ) {
        let mask = self.node_mask(pod);
        let max = if matches!(pod, IpNet::V4(_)) { 32 } else { 128 };
        if mask < pod.prefix_len() || mask > max - 2 {
            self.error(
                "spec.networking.nodeCIDRMaskSize",
                format!("/{mask} does not fit in the pod subnet {pod}"),
                &format!(
                    "use a prefix between /{} and /{}",
                    pod.prefix_len(),
                    max - 2
                ),
            );
            return;
        }
        let mut taken: Vec<IpNet> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let Some(text) = &spec.pod_cidr else { continue };
            let path = format!("spec.hosts[{i}].podCIDR");
            match text.parse::<IpNet>() {
                Ok(net) if net.trunc() == net && pod.contains(&net) => {
                    if let Some(other) = taken.iter().find(|t| overlaps(**t, net)) {
                        self.error(
                            &path,
                            format!("{net} overlaps {other}, given to another host"),
                            "give every host its own block",
                        );
                    }
                    taken.push(net);
                    if let Some((_, h)) = hosts.iter_mut().find(|(j, _)| *j == i) {
                        h.pod_cidr = net;
                    }
                }
                Ok(net) => self.error(
                    &path,
                    format!("{net} is not a network inside the pod subnet {pod}"),
                    &format!("pick a /{mask} block of {pod}, or leave podCIDR out"),
                ),
                Err(_) => self.error(
                    &path,
                    format!("\"{text}\" is not a CIDR"),
                    "write e.g. 10.244.3.0/24",
                ),
            }
        }
        let Ok(mut blocks) = pod.subnets(mask) else {
            return;
        };
        for (i, h) in hosts.iter_mut() {
            if specs[*i].pod_cidr.is_some() {
                continue;
            }
            match blocks.find(|b| !taken.iter().any(|t| overlaps(*t, *b))) {
                Some(b) => {
                    h.pod_cidr = b;
                    taken.push(b);
                }
                None => {
                    self.error(
                        "spec.networking.nodeCIDRMaskSize",
                        format!(
                            "the pod subnet {pod} holds too few /{mask} blocks for {} hosts",
                            specs.len()
                        ),
                        "use a larger pod subnet or a longer nodeCIDRMaskSize",
                    );
                    return;
                }
            }
        }
    }

    fn endpoint(&mut self, hosts: &[(usize, Host)]) -> Option<Endpoint> {
        let path = "spec.controlPlaneEndpoint";
        match &self.loaded.inventory.spec.control_plane_endpoint {
            None => hosts
                .iter()
                .find(|(_, h)| h.control_plane)
                .map(|(_, h)| Endpoint {
                    host: h.address.clone(),
                    port: API_PORT,
                }),
            Some(text) => match parse_host_port(text, API_PORT) {
                Ok((host, port)) => Some(Endpoint { host, port }),
                Err(e) => {
                    self.error(
                        path,
                        e,
                        "write host or host:port, e.g. api.example.com:6443 or 10.0.0.10",
                    );
                    None
                }
            },
        }
    }

    fn check_overlaps(
        &mut self,
        pod: IpNet,
        svc: IpNet,
        hosts: &[(usize, Host)],
        endpoint: Option<&Endpoint>,
    ) {
        if overlaps(pod, svc) {
            self.error(
                "spec.networking.serviceSubnet",
                format!("{svc} overlaps the pod subnet {pod}"),
                "pod and service ranges must be disjoint, e.g. pods 10.244.0.0/16, services 10.96.0.0/12",
            );
        }
        for (i, h) in hosts {
            let Ok(ip) = h.address.parse::<IpAddr>() else {
                continue;
            };
            for (net, what) in [(pod, "pod subnet"), (svc, "service subnet")] {
                if net.contains(&ip) {
                    self.error(
                        &format!("spec.hosts[{i}].address"),
                        format!("{ip} lies inside the {what} {net}"),
                        "host addresses must be outside the pod and service ranges: change spec.networking",
                    );
                }
            }
        }
        if let Some(ep) = endpoint
            && self.loaded.inventory.spec.control_plane_endpoint.is_some()
            && let Ok(ip) = ep.host.parse::<IpAddr>()
            && (pod.contains(&ip) || svc.contains(&ip))
        {
            self.error(
                "spec.controlPlaneEndpoint",
                format!("{ip} lies inside the pod or service subnet"),
                "the endpoint must be a host or load-balancer address outside the cluster's ranges",
            );
        }
    }
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn nth_address(net: IpNet, n: u128) -> Option<IpAddr> {
    match net {
        IpNet::V4(v4) => {
            let base = u32::from(v4.network()) as u128;
            Some(IpAddr::V4(std::net::Ipv4Addr::from((base + n) as u32)))
        }
        IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            Some(IpAddr::V6(std::net::Ipv6Addr::from(base + n)))
        }
    }
}

fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("\"{text}\" is not host or host:port");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else if text.parse::<IpAddr>().is_ok() {
        (text.to_string(), None)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("\"{p}\" in \"{text}\" is not a port")),
        },
    };
    if host.parse::<IpAddr>().is_err() && !is_host_name(&host) {
        return Err(bad());
    }
    Ok((host, port))
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A name a resolver can look up: its last label is not all digits (RFC 1123), so a mistyped
/// IPv4 address such as 10.0.0.300 is not taken for a name.
pub fn is_host_name(s: &str) -> bool {
    is_dns_subdomain(s)
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

fn is_wildcard_dns(s: &str) -> bool {
    s.strip_prefix("*.").is_some_and(is_dns_subdomain)
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn check_label(key: &str, value: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!(
                    "the prefix of label key \"{key}\" is not a DNS name"
                ));
            }
            name
        }
        None => key,
    };
    if !is_label_name(name) {
        return Err(format!("\"{key}\" is not a valid label key"));
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(format!("\"{value}\" is not a valid label value"));
    }
    Ok(())
}

fn check_taint(taint: &str) -> Result<(), String> {
    let (kv, effect) = taint
        .rsplit_once(':')
        .ok_or_else(|| format!("\"{taint}\" has no effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!("\"{effect}\" is not a taint effect"));
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    check_label(k, v).map_err(|e| format!("taint \"{taint}\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            parse_host_port("api.example.com", 6443).unwrap(),
            ("api.example.com".into(), 6443)
        );
        assert_eq!(
            parse_host_port("10.0.0.1:7443", 6443).unwrap(),
            ("10.0.0.1".into(), 7443)
        );
        assert_eq!(
            parse_host_port("[fd00::1]:443", 6443).unwrap(),
            ("fd00::1".into(), 443)
        );
        assert_eq!(
            parse_host_port("fd00::1", 6443).unwrap(),
            ("fd00::1".into(), 6443)
        );
        assert!(parse_host_port("api:0", 6443).is_err());
        assert!(parse_host_port("bad_host:6443", 6443).is_err());
        assert!(parse_host_port("10.0.0.300", 6443).is_err());
        assert!(is_host_name("n1.example.com") && is_host_name("n1"));
        assert!(!is_host_name("10.244.1.300"));
    }

    #[test]
    fn service_addresses() {
        let net: IpNet = "10.96.0.0/12".parse().unwrap();
        assert_eq!(nth_address(net, 1).unwrap().to_string(), "10.96.0.1");
        assert_eq!(nth_address(net, 10).unwrap().to_string(), "10.96.0.10");
    }

    #[test]
    fn taints_and_labels() {
        assert!(check_taint("dedicated=gpu:NoSchedule").is_ok());
        assert!(check_taint("node-role.kubernetes.io/control-plane:NoSchedule").is_ok());
        assert!(check_taint("gpu:Sometimes").is_err());
        assert!(check_label("example.com/zone", "eu-1").is_ok());
        assert!(check_label("zone", "eu 1").is_err());
    }
}
