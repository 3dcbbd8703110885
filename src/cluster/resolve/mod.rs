//! Resolution: every check of the inventory's meaning and every derived value, once, with
//! every problem collected (errors and warnings) so one run shows all that is wrong.

mod bundle;
mod hosts;
mod network;
mod pki;

use super::*;
use crate::inventory::{
    self, BastionSpec, EndpointSpec, Loaded, Problem, Problems, Role, Severity, SshSpec, SudoMode,
    VipSpec,
};
use crate::version::CATALOG_MINORS;
use std::collections::HashMap;

/// The catalog's oldest and newest minors: the supported range.
const OLDEST_MINOR: u32 = CATALOG_MINORS[0];
const NEWEST_MINOR: u32 = CATALOG_MINORS[CATALOG_MINORS.len() - 1];
use hosts::is_wildcard_dns;
pub use hosts::{is_dns_label, is_dns_subdomain, is_host_name};
use network::nth_address;
pub(crate) use network::overlaps;

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
            policy_engine: self.policy_engine(),
            bundle: bundle?,
            bundle_versions: self.bundle_versions(),
            pki: pki?,
            etcd_snapshots: self.etcd_snapshots(),
            eviction: self.eviction(),
            hosts: hosts.into_iter().map(|(_, h)| h).collect(),
            seed: None,
        })
    }

    /// `spec.cni.networkPolicy`: whether kube-router's firewall runs on every node (the
    /// built-in network's default). Networks that enforce policies themselves refuse a second
    /// engine.
    fn policy_engine(&mut self) -> bool {
        let spec = &self.loaded.inventory.spec;
        let (name, asked) = (spec.cni.name, spec.cni.network_policy);
        if name.enforces_policies() {
            if asked == Some(true) {
                self.error(
                    "spec.cni.networkPolicy",
                    format!(
                        "{} enforces NetworkPolicy itself; a second engine would fight it",
                        name.as_str()
                    ),
                    "remove spec.cni.networkPolicy",
                );
            }
            return false;
        }
        asked.unwrap_or(name == inventory::CniName::Builtin)
    }

    /// `spec.kubelet.evictionHard` over the kubelet's defaults.
    fn eviction(&mut self) -> crate::cluster::Eviction {
        let asked = &self.loaded.inventory.spec.kubelet.eviction_hard;
        match crate::cluster::Eviction::with(asked) {
            Ok(e) => e,
            Err((signal, message)) => {
                self.error(
                    &format!("spec.kubelet.evictionHard.{signal}"),
                    message,
                    "name signals like nodefs.available or imagefs.available, with a quantity (2Gi) or a percentage (10%)",
                );
                crate::cluster::Eviction::default()
            }
        }
    }

    /// `spec.etcd.snapshots`: checked enough that the unit files it becomes are well-formed.
    fn etcd_snapshots(&mut self) -> Option<crate::cluster::SnapshotSchedule> {
        let spec = self.loaded.inventory.spec.etcd.snapshots.clone()?;
        let schedule = spec.schedule.unwrap_or_else(|| "*-*-* 00,12:00:00".into());
        if schedule.trim().is_empty() || schedule.contains(['\n', '\r']) {
            self.error(
                "spec.etcd.snapshots.schedule",
                format!("{schedule:?} is not a schedule"),
                "write it as systemd's OnCalendar does: hourly, daily, or *-*-* 00/6:00:00",
            );
        }
        let keep = spec.keep.unwrap_or(5);
        if keep == 0 {
            self.error(
                "spec.etcd.snapshots.keep",
                "0 snapshots would be kept".to_string(),
                "keep 1 or more, or remove spec.etcd.snapshots",
            );
        }
        let dir = spec
            .dir
            .unwrap_or_else(|| crate::paths::ETCD_SNAPSHOT_DIR.to_string());
        let plain = dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
        if !dir.starts_with('/') || !plain || dir.split('/').any(|p| p == "..") {
            self.error(
                "spec.etcd.snapshots.dir",
                format!("{dir:?} is not an absolute path of plain names"),
                "use a path like /var/backups/etcd",
            );
        }
        Some(crate::cluster::SnapshotSchedule {
            schedule,
            keep,
            dir,
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
}
