//! The cluster's networks: the pod and service subnets, each node's pod CIDR, the VXLAN settings,
//! the API endpoint, and that none of them overlap the hosts.

use super::*;

impl Resolver<'_> {
    pub(super) fn subnet(
        &mut self,
        path: &str,
        given: Option<&String>,
        default: &str,
    ) -> Option<IpNet> {
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

    pub(super) fn subnets(&mut self) -> (Option<IpNet>, Option<IpNet>) {
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

    pub(super) fn node_mask(&self, pod: IpNet) -> u8 {
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

    pub(super) fn vxlan(&mut self) -> Vxlan {
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

    /// Each node gets its own block of the pod subnet: the one the inventory names, or the next
    /// free one in inventory order.
    pub(super) fn assign_pod_cidrs(
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

    pub(super) fn endpoint(&mut self, hosts: &[(usize, Host)]) -> Option<Endpoint> {
        let path = "spec.controlPlaneEndpoint";
        match &self.loaded.inventory.spec.control_plane_endpoint {
            None => hosts
                .iter()
                .find(|(_, h)| h.control_plane)
                .map(|(_, h)| Endpoint {
                    host: h.address.clone(),
                    port: API_PORT,
                    vip: None,
                }),
            Some(EndpointSpec::Address(text)) => match parse_host_port(text, API_PORT) {
                Ok((host, port)) => Some(Endpoint {
                    host,
                    port,
                    vip: None,
                }),
                Err(e) => {
                    self.error(
                        path,
                        e,
                        "write host or host:port, e.g. api.example.com:6443 or 10.0.0.10, or vip: ADDRESS",
                    );
                    None
                }
            },
            Some(EndpointSpec::Vip(spec)) => self.vip(spec, hosts),
        }
    }

    /// A VIP: an address of its own (no name: VRRP moves an address), no host's, on a network
    /// the control planes share (checked on the hosts by preflight).
    fn vip(&mut self, spec: &VipSpec, hosts: &[(usize, Host)]) -> Option<Endpoint> {
        let path = "spec.controlPlaneEndpoint.vip";
        let Ok(address) = spec.vip.parse::<IpAddr>() else {
            self.error(
                path,
                format!("{:?} is not an IP address", spec.vip),
                "a VIP is an unused address in the control planes' subnet, e.g. 10.0.0.100; for a DNS name use controlPlaneEndpoint: NAME:PORT",
            );
            return None;
        };
        if address.is_loopback() || address.is_unspecified() || address.is_multicast() {
            self.error(
                path,
                format!("{address} cannot be shared by the control planes"),
                "use an unused unicast address in the control planes' subnet",
            );
            return None;
        }
        if let Some((i, h)) = hosts
            .iter()
            .find(|(_, h)| h.address.parse::<IpAddr>().ok() == Some(address))
        {
            self.error(
                path,
                format!(
                    "{address} is the address of host {} (spec.hosts[{i}])",
                    h.name
                ),
                "the VIP moves between the control planes: pick an address no host has",
            );
            return None;
        }
        if !hosts.iter().any(|(_, h)| h.control_plane) {
            return None;
        }
        if spec.virtual_router_id == Some(0) {
            self.error(
                "spec.controlPlaneEndpoint.virtualRouterId",
                "0 is not a VRRP router id".into(),
                "use 1 to 255, unique among the VRRP routers of the network segment",
            );
            return None;
        }
        let router_id = spec
            .virtual_router_id
            .unwrap_or_else(|| default_router_id(&self.loaded.inventory.metadata.name));
        Some(Endpoint {
            host: address.to_string(),
            // the API servers' own port: the VIP lands on one of them
            port: API_PORT,
            vip: Some(Vip {
                address,
                interface: spec.interface.clone(),
                router_id,
            }),
        })
    }

    pub(super) fn check_overlaps(
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

/// A router id from the cluster's name (1-255): clusters side by side get different ones unless
/// their names collide, which `virtualRouterId` settles.
fn default_router_id(name: &str) -> u8 {
    let sum = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (sum % 255 + 1) as u8
}

pub(crate) fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub(super) fn nth_address(net: IpNet, n: u128) -> Option<IpAddr> {
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

pub(super) fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn endpoint_forms() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            parse_host_port("api.example.com", 6443)?,
            ("api.example.com".into(), 6443)
        );
        assert_eq!(
            parse_host_port("10.0.0.1:7443", 6443)?,
            ("10.0.0.1".into(), 7443)
        );
        assert_eq!(
            parse_host_port("[fd00::1]:443", 6443)?,
            ("fd00::1".into(), 443)
        );
        assert_eq!(parse_host_port("fd00::1", 6443)?, ("fd00::1".into(), 6443));
        assert!(parse_host_port("api:0", 6443).is_err());
        assert!(parse_host_port("bad_host:6443", 6443).is_err());
        assert!(parse_host_port("10.0.0.300", 6443).is_err());
        assert!(is_host_name("n1.example.com") && is_host_name("n1"));
        assert!(!is_host_name("10.244.1.300"));
        Ok(())
    }

    #[test]
    fn service_addresses() -> Result<(), Box<dyn std::error::Error>> {
        let net: IpNet = "10.96.0.0/12".parse()?;
        assert_eq!(
            nth_address(net, 1)
                .ok_or("the range is too small")?
                .to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            nth_address(net, 10)
                .ok_or("the range is too small")?
                .to_string(),
            "10.96.0.10"
        );
        Ok(())
    }
}
