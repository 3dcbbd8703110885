//! The inventory file: what the user wrote, parsed strictly (unknown fields are errors).
//!
//! Every check made here or in [`crate::cluster`] reports file:line:column through [`Problems`].

pub mod locate;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use locate::{Position, Positions};

pub const API_VERSION: &str = "provision/v1alpha1";
pub const KIND: &str = "Cluster";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub kubernetes_version: Option<String>,
    /// How clients reach the API: `host[:port]` (a load balancer or DNS name the user runs), or
    /// `{vip: ADDRESS}` for a virtual address the control planes hold themselves; default: the
    /// first control plane, port 6443.
    pub control_plane_endpoint: Option<EndpointSpec>,
    #[serde(default)]
    pub api_server: ApiServerSpec,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub runtime: RuntimeSpec,
    #[serde(default)]
    pub cni: CniSpec,
    #[serde(default)]
    pub bundle: BundleSpec,
    #[serde(default)]
    pub ssh: SshSpec,
    #[serde(default)]
    pub pki: PkiSpec,
    #[serde(default)]
    pub etcd: EtcdSpec,
    #[serde(default)]
    pub kubelet: KubeletSpec,
    pub hosts: Vec<HostSpec>,
}

/// `spec.controlPlaneEndpoint`: an address the user serves, or a VIP provision runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// `host[:port]`.
    Address(String),
    Vip(VipSpec),
}

/// A virtual API address held by one healthy control plane at a time (VRRP), with every node
/// reaching the API servers through a load balancer of its own on loopback.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VipSpec {
    /// An unused address in the control planes' subnet.
    pub vip: String,
    /// The interface that carries it; default: the one holding each host's address.
    pub interface: Option<String>,
    /// VRRP's router id (1-255), unique on the network segment; default: from the cluster name.
    pub virtual_router_id: Option<u8>,
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EndpointSpec, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = EndpointSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("host[:port], or a map with `vip: ADDRESS`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                Ok(EndpointSpec::Address(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EndpointSpec, A::Error> {
                VipSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(EndpointSpec::Vip)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The kubelet on every node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletSpec {
    /// Hard eviction thresholds (`nodefs.available: 2Gi`, `imagefs.available: 10%`), each over
    /// the kubelet's default for that signal.
    #[serde(default)]
    pub eviction_hard: BTreeMap<String, String>,
}

/// etcd on the control planes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdSpec {
    /// Snapshots taken on every control plane by a systemd timer.
    pub snapshots: Option<SnapshotScheduleSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotScheduleSpec {
    /// When, as systemd's OnCalendar reads it (`hourly`, `daily`, `*-*-* 00/6:00:00`); default
    /// twice a day.
    pub schedule: Option<String>,
    /// How many to keep on each control plane (default 5).
    pub keep: Option<u32>,
    /// Where (default /var/lib/provision/etcd-snapshots).
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

/// The cluster's certificates: key type, lifetimes, and an optional CA the user brings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PkiSpec {
    #[serde(default)]
    pub key_type: KeyType,
    /// Lifetime of leaf certificates (default 365 days).
    pub cert_validity_days: Option<u32>,
    /// Lifetime of generated CAs (default 3650 days).
    pub ca_validity_days: Option<u32>,
    /// The cluster CA (`kubernetes`) from the user. Without its key, every leaf it signs must be
    /// placed on the hosts by the user; provision then only checks them.
    #[serde(rename = "externalCA")]
    pub external_ca: Option<ExternalCaSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalCaSpec {
    pub cert_file: String,
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiServerSpec {
    /// Extra subject alternative names for the API server certificate.
    #[serde(default, rename = "certSANs")]
    pub cert_sans: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    pub pod_subnet: Option<String>,
    pub service_subnet: Option<String>,
    pub dns_domain: Option<String>,
    /// Prefix length of each node's pod CIDR (default 24 for IPv4, 64 for IPv6).
    #[serde(rename = "nodeCIDRMaskSize")]
    pub node_cidr_mask_size: Option<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeName {
    #[default]
    Containerd,
    CriO,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeClass {
    Gvisor,
    Kata,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeSpec {
    #[serde(default)]
    pub name: RuntimeName,
    #[serde(default)]
    pub runtime_classes: Vec<RuntimeClass>,
    /// Registry host → mirror endpoints (containerd `hosts.toml`, CRI-O `registries.conf`).
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CniName {
    #[default]
    Builtin,
    Flannel,
    Calico,
    Cilium,
}

impl CniName {
    /// The networks that bring their own NetworkPolicy engine (their descriptors say so too).
    pub fn enforces_policies(self) -> bool {
        matches!(self, CniName::Calico | CniName::Cilium)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniName::Builtin => "builtin",
            CniName::Flannel => "flannel",
            CniName::Calico => "calico",
            CniName::Cilium => "cilium",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CniSpec {
    #[serde(default)]
    pub name: CniName,
    /// builtin only: how pod traffic crosses between nodes.
    #[serde(default)]
    pub overlay: Overlay,
    #[serde(default)]
    pub vxlan: VxlanSpec,
    /// NetworkPolicy enforced by kube-router's firewall controller on every node: default on with
    /// `builtin`, off with `flannel`; Calico and Cilium enforce policies themselves.
    pub network_policy: Option<bool>,
}

/// `vxlan` (default): a VXLAN overlay, nodes anywhere IP reaches; `none`: plain routes through
/// the nodes' addresses, for nodes on one L2 segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlay {
    #[default]
    Vxlan,
    None,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VxlanSpec {
    /// VXLAN network identifier; default 1.
    pub vni: Option<u32>,
    /// UDP port; default 4789 (IANA).
    pub port: Option<u16>,
    /// Overlay MTU; default: the node interface's MTU minus 50.
    pub mtu: Option<u32>,
}

/// Where the components come from: upstream release sites (default), a mirror with the same
/// layout, or an unpacked bundle directory (air-gapped).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleSpec {
    pub mirror: Option<String>,
    pub ca_file: Option<String>,
    pub dir: Option<String>,
    /// Per-component version overrides, e.g. `etcd: 3.5.33`.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SudoMode {
    /// sudo when the login user is not root
    #[default]
    Auto,
    Always,
    Never,
}

/// SSH settings; `spec.ssh` holds the defaults, `hosts[].ssh` overrides them per host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshSpec {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub known_hosts_file: Option<String>,
    pub bastion: Option<BastionSpec>,
    pub sudo: Option<SudoMode>,
    pub connect_timeout_seconds: Option<u64>,
    pub command_timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BastionSpec {
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostSpec {
    pub name: String,
    pub address: String,
    pub roles: Vec<Role>,
    #[serde(default)]
    pub ssh: SshSpec,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<String>,
    /// This node's pod CIDR; default: the next free block of the pod subnet.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// The host's CPU architecture: amd64 (default) or arm64.
    #[serde(default)]
    pub arch: Option<Arch>,
}

/// A parsed inventory with what is needed to point at its text.
#[derive(Debug)]
pub struct Loaded {
    pub file: PathBuf,
    pub inventory: Inventory,
    pub positions: Positions,
}

impl Loaded {
    /// Resolves a path written in the inventory relative to the inventory's directory.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let expanded = expand_home(p);
        if expanded.is_absolute() {
            expanded
        } else {
            self.file
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(expanded)
        }
    }

    pub fn problem(&self, severity: Severity, path: &str, message: String, hint: &str) -> Problem {
        Problem {
            severity,
            path: path.to_string(),
            position: self.positions.find(path),
            message,
            hint: (!hint.is_empty()).then(|| hint.to_string()),
        }
    }
}

pub fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(p)),
        None => PathBuf::from(p),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub severity: Severity,
    pub path: String,
    pub position: Option<Position>,
    pub message: String,
    pub hint: Option<String>,
}

/// Everything wrong with one inventory file.
#[derive(Debug)]
pub struct Problems {
    pub file: PathBuf,
    pub items: Vec<Problem>,
}

impl Problems {
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.items
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .map(|p| self.format(p))
    }

    fn format(&self, p: &Problem) -> String {
        let at = match p.position {
            Some(pos) => format!("{}:{}:{}", self.file.display(), pos.line, pos.column),
            None => self.file.display().to_string(),
        };
        let kind = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut s = if p.path.is_empty() {
            format!("{at}: {kind}: {}", p.message)
        } else {
            format!("{at}: {kind}: {}: {}", p.path, p.message)
        };
        if let Some(h) = &p.hint {
            s.push_str(&format!("\n  hint: {h}"));
        }
        s
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<String> = self
            .items
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| self.format(p))
            .collect();
        write!(f, "{}", errors.join("\n"))
    }
}

impl std::error::Error for Problems {}

/// Reads and parses an inventory file; syntax, type and unknown-field errors carry their position.
pub fn load(file: &Path) -> Result<Loaded, Problems> {
    let fail = |position, message: String, hint: &str| Problems {
        file: file.to_path_buf(),
        items: vec![Problem {
            severity: Severity::Error,
            path: String::new(),
            position,
            message,
            hint: (!hint.is_empty()).then(|| hint.to_string()),
        }],
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(
            None,
            format!("cannot read the inventory: {e}"),
            "pass an existing file with -i, e.g. -i inventories/testbed.yaml",
        )
    })?;
    let inventory: Inventory = serde_yaml::from_str(&text).map_err(|e| {
        let position = e.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        });
        let message = e.to_string();
        // serde's text already names the field; drop its trailing " at line X column Y"
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        let hint = if message.contains("unknown field") {
            "check the spelling against the inventory reference in README.md"
        } else if message.contains("missing field") {
            "add the field; README.md lists what each section needs"
        } else if message.contains("unknown variant") {
            "use one of the values listed"
        } else if message.contains("invalid type") {
            "the value has the wrong shape: README.md shows each field with an example"
        } else if message.contains("invalid value") {
            "the value is out of range for this field"
        } else {
            "fix the YAML at that place: indentation, brackets and quotes must balance"
        };
        fail(position, message, hint)
    })?;
    Ok(Loaded {
        file: file.to_path_buf(),
        positions: Positions::of(&text),
        inventory,
    })
}

/// A host's processor architecture, as release downloads name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// What `uname -m` prints on such a host.
    pub fn uname_m(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        })
    }
}
