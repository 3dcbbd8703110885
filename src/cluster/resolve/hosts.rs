//! The hosts: names, addresses, roles, labels and taints, and how each is reached over SSH.

use super::*;

impl Resolver<'_> {
    pub(super) fn ssh_target(&mut self, i: usize, address: &str) -> SshTarget {
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
    pub(super) fn hosts(&mut self, pod_subnet: Option<IpNet>) -> Vec<(usize, Host)> {
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

pub(super) fn is_wildcard_dns(s: &str) -> bool {
    s.strip_prefix("*.").is_some_and(is_dns_subdomain)
}

pub(super) fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

pub(super) fn check_label(key: &str, value: &str) -> Result<(), String> {
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

pub(super) fn check_taint(taint: &str) -> Result<(), String> {
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
    fn taints_and_labels() {
        assert!(check_taint("dedicated=gpu:NoSchedule").is_ok());
        assert!(check_taint("node-role.kubernetes.io/control-plane:NoSchedule").is_ok());
        assert!(check_taint("gpu:Sometimes").is_err());
        assert!(check_label("example.com/zone", "eu-1").is_ok());
        assert!(check_label("zone", "eu 1").is_err());
    }
}
