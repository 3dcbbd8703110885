//! The checks, as pure functions of the facts: per host (`host_checks`) and across hosts
//! (`cluster_checks`: duplicate names and addresses, clock skew).

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// A check that did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub level: Level,
    pub message: String,
}

pub(super) fn error(check: &str, message: String) -> Finding {
    Finding {
        check: check.into(),
        level: Level::Error,
        message,
    }
}

pub(super) fn warning(check: &str, message: String) -> Finding {
    Finding {
        check: check.into(),
        level: Level::Warning,
        message,
    }
}

/// The ports a role needs, with the process that legitimately holds each once provisioned.
pub fn ports(host: &Host) -> Vec<(u16, &'static str)> {
    let mut p = Vec::new();
    if host.control_plane {
        p.extend([
            (6443, "kube-apiserver"),
            (2379, "etcd"),
            (2380, "etcd"),
            (10257, "kube-controller-manager"),
            (10259, "kube-scheduler"),
        ]);
    }
    p.push((10250, "kubelet"));
    p
}

pub(super) const MIN_CONTROL_PLANE_CPUS: u64 = 2;

pub(super) const MIN_CONTROL_PLANE_MEM_MB: u64 = 1700;

pub(super) const MIN_WORKER_MEM_MB: u64 = 512;

pub(super) const MAX_CLOCK_SKEW_SECONDS: f64 = 2.0;

/// Checks of one host on its own.
pub fn host_checks(cluster: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    HOST_CHECKS
        .iter()
        .flat_map(|check| check(cluster, host, f))
        .collect()
}

/// A check of one host: what it found (nothing when the host passes).
type HostCheck = fn(&Cluster, &Host, &Facts) -> Vec<Finding>;

/// The host checks, in the order their findings are reported (kubeadm's names where it has one).
const HOST_CHECKS: &[HostCheck] = &[
    privileged_user,
    systemd,
    distribution,
    architecture,
    cpus,
    memory,
    disk_space,
    swap,
    ports_free,
    oom_score_adj,
    conntrack,
    policy_engine_commands,
    vip_endpoint,
    cgroups,
    cgroup_controllers,
    kernel_features,
    unit_drop_ins,
    cni_configs,
    hostname,
    machine_id,
    node_ip,
];

fn privileged_user(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    if f.get("uid") == "0" {
        return Vec::new();
    }
    vec![error(
        "IsPrivilegedUser",
        format!(
            "commands run as uid {}, not root: log in as root, or set spec.ssh.sudo: always",
            f.get("uid")
        ),
    )]
}

fn systemd(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    if f.get("pid1") != "systemd" {
        return vec![error(
            "Systemd",
            format!(
                "PID 1 is {:?}, not systemd: components run as systemd units",
                f.get("pid1")
            ),
        )];
    }
    match f.get("system_state") {
        "running" => Vec::new(),
        "degraded" => vec![warning(
            "Systemd",
            "systemd reports degraded: `systemctl --failed` lists the failed units".into(),
        )],
        s => vec![error(
            "Systemd",
            format!(
                "systemd is {s:?}, not running: wait for boot to finish, or see `systemctl --failed`"
            ),
        )],
    }
}

/// Distributions the components are known to run on.
const TESTED_DISTRIBUTIONS: [&str; 11] = [
    "debian",
    "ubuntu",
    "rhel",
    "centos",
    "rocky",
    "almalinux",
    "fedora",
    "flatcar",
    "opensuse-leap",
    "sles",
    "amzn",
];

fn distribution(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    let os = f.get("os");
    let os_id = os.split_whitespace().next().unwrap_or("");
    if TESTED_DISTRIBUTIONS.contains(&os_id) {
        return Vec::new();
    }
    vec![warning(
        "OS",
        format!("{os:?} is not a tested distribution; continuing"),
    )]
}

fn architecture(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    if ["x86_64", "aarch64"].contains(&f.get("arch")) {
        return Vec::new();
    }
    vec![error(
        "Arch",
        format!(
            "{} is not supported: use an amd64 or arm64 host",
            f.get("arch")
        ),
    )]
}

fn cpus(_: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    let cpus = f.num("cpus").unwrap_or(0);
    if !host.control_plane || cpus >= MIN_CONTROL_PLANE_CPUS {
        return Vec::new();
    }
    vec![error(
        "NumCPU",
        format!("{cpus} CPU(s); a control plane needs at least {MIN_CONTROL_PLANE_CPUS}"),
    )]
}

fn memory(_: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    let mem_mb = f.num("mem_kb").unwrap_or(0) / 1024;
    if host.control_plane && mem_mb < MIN_CONTROL_PLANE_MEM_MB {
        vec![error(
            "Mem",
            format!(
                "{mem_mb} MB of memory; a control plane needs at least {MIN_CONTROL_PLANE_MEM_MB} MB"
            ),
        )]
    } else if mem_mb < MIN_WORKER_MEM_MB {
        vec![warning(
            "Mem",
            format!(
                "{mem_mb} MB of memory leaves little for pods (at least {MIN_WORKER_MEM_MB} MB advised)"
            ),
        )]
    } else {
        Vec::new()
    }
}

/// Free space above the kubelet's eviction floor below which a warning says pods will soon be
/// evicted (the bundle and images take about this much).
pub(super) const DISK_MARGIN: u64 = 1 << 30;

/// A kubelet on a disk below its eviction threshold evicts every pod it runs (DiskPressure):
/// refused here rather than found by `verify` minutes later.
fn disk_space(c: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    let mut numbers = f.get("disk").split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(size)), Some(Ok(free))) = (numbers.next(), numbers.next()) else {
        return Vec::new();
    };
    let Some((signal, floor)) = c.eviction.disk_floor(size) else {
        return Vec::new();
    };
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let said = format!(
        "/var/lib has {} free of {} ({:.0}%); the kubelet evicts pods below {signal} {} ({})",
        gib(free),
        gib(size),
        free as f64 * 100.0 / size.max(1) as f64,
        c.eviction.hard[signal],
        gib(floor)
    );
    let fix = "free disk space, or set spec.kubelet.evictionHard (e.g. imagefs.available: 2Gi, nodefs.available: 1Gi)";
    if free < floor {
        vec![error("DiskSpace", format!("{said}: {fix}"))]
    } else if free < floor + DISK_MARGIN {
        vec![warning(
            "DiskSpace",
            format!("{said}, little above it: {fix}"),
        )]
    } else {
        Vec::new()
    }
}

fn swap(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    let swaps = f.num("swaps").unwrap_or(0);
    if swaps == 0 {
        return Vec::new();
    }
    vec![error(
        "Swap",
        format!(
            "swap is on ({swaps} device(s) in /proc/swaps): the kubelet refuses to start; run `swapoff -a` and remove swap from /etc/fstab"
        ),
    )]
}

fn ports_free(_: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    if f.values.contains_key("no_ss") {
        return vec![warning(
            "Ports",
            "`ss` (iproute2) is missing: ports were not checked".into(),
        )];
    }
    let mut out = Vec::new();
    for (port, owner) in ports(host) {
        match f.listening.get(&port) {
            None => {}
            // process names are cut to 15 characters (the kernel's comm)
            Some(p) if p == owner || (p.len() == 15 && owner.starts_with(p.as_str())) => {}
            Some(p) => out.push(error(
                &format!("Port-{port}"),
                format!(
                    "port {port} is in use by {}; {owner} needs it: stop that service or free the port",
                    if p.is_empty() { "another process" } else { p }
                ),
            )),
        }
    }
    out
}

fn oom_score_adj(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    if !f.values.contains_key("oom_score_locked") {
        return Vec::new();
    }
    vec![warning(
        "OomScoreAdj",
        "processes here cannot lower their oom_score_adj (no CAP_SYS_RESOURCE): containerd will run with restrict_oom_score_adj, so system pods get no OOM protection".into(),
    )]
}

fn conntrack(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    if !f.values.contains_key("conntrack_read_only") {
        return Vec::new();
    }
    vec![warning(
        "ConntrackReadOnly",
        "nf_conntrack_max cannot be written here (e.g. a container): kube-proxy will leave the conntrack limits alone (conntrack.maxPerCore: 0)".into(),
    )]
}

/// kube-router runs ipset and iptables itself; a host without them never enforces a policy.
fn policy_engine_commands(cluster: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    let missing: Vec<&str> = f
        .get("missing_commands")
        .split_whitespace()
        .filter(|c| crate::cni::policy_engine::HOST_COMMANDS.contains(c))
        .collect();
    if !crate::cni::policy_engine::enabled(cluster) || missing.is_empty() {
        return Vec::new();
    }
    vec![error(
        "NetworkPolicyCommands",
        format!(
            "{} not found: kube-router, the NetworkPolicy engine (spec.cni.networkPolicy), runs them; install them (Debian, Ubuntu: apt-get install ipset iptables; RHEL: dnf install ipset iptables-nft), or set spec.cni.networkPolicy: false",
            missing.join(", ")
        ),
    )]
}

/// A VIP endpoint: keepalived and curl on the control planes, haproxy and its loopback port on
/// every node, and a VIP on the network of each control plane's address (VRRP moves it by ARP
/// within one segment).
fn vip_endpoint(cluster: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    use crate::ha::{api_proxy, vip};
    let Some(v) = &cluster.endpoint.vip else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut wanted: Vec<&str> = api_proxy::HOST_COMMANDS.to_vec();
    if host.control_plane {
        wanted.extend(vip::HOST_COMMANDS);
    }
    let missing: Vec<&str> = f
        .get("missing_commands")
        .split_whitespace()
        .filter(|c| wanted.contains(c))
        .collect();
    if !missing.is_empty() {
        out.push(error(
            "VipCommands",
            format!(
                "{} not found: the VIP endpoint (spec.controlPlaneEndpoint.vip) runs them; install them (Debian, Ubuntu: apt-get install {}; RHEL: dnf install {})",
                missing.join(", "),
                missing.join(" "),
                missing.join(" ")
            ),
        ));
    }
    let port = crate::cluster::LOCAL_API_PORT;
    if let Some(p) = f.listening.get(&port)
        && p != "haproxy"
    {
        out.push(error(
            &format!("Port-{port}"),
            format!(
                "port {port} is in use by {}; the node's API load balancer (haproxy) needs it on loopback: stop that service or free the port",
                if p.is_empty() { "another process" } else { p }
            ),
        ));
    }
    if host.control_plane && f.addresses.contains(&host.address) {
        let networks: Vec<ipnet::IpNet> = f
            .networks
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .filter(|n| n.addr().to_string() == host.address)
            .collect();
        if !networks.iter().any(|n| n.trunc().contains(&v.address)) {
            out.push(error(
                "VipSubnet",
                format!(
                    "the VIP {} is outside the network of {} ({}): keepalived moves it within one network segment; pick an unused address there",
                    v.address,
                    host.address,
                    networks
                        .iter()
                        .map(|n| n.trunc().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    out
}

fn cgroups(cluster: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    match f.get("cgroup_fs") {
        "cgroup2fs" => Vec::new(),
        "tmpfs" => vec![warning(
            "CgroupsV1",
            format!(
                "the host uses cgroup v1, deprecated by Kubernetes and containerd 2.2: kubelet {} runs on it only with failCgroupV1: false, which provision sets; move the host to cgroup v2",
                cluster.version
            ),
        )],
        other => vec![error(
            "Cgroups",
            format!("no cgroup filesystem at /sys/fs/cgroup ({other:?})"),
        )],
    }
}

fn cgroup_controllers(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    let controllers: Vec<&str> = f.get("cgroup_controllers").split_whitespace().collect();
    let missing: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| !controllers.contains(c))
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    vec![error(
        "CgroupControllers",
        format!(
            "cgroup controllers missing or disabled: {}",
            missing.join(", ")
        ),
    )]
}

fn kernel_features(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    ["overlay", "bridge", "br_netfilter", "vxlan"]
        .into_iter()
        .filter(|feature| !f.features.iter().any(|x| x == feature))
        .map(|feature| {
            error(
                &format!("KernelFeature-{feature}"),
                format!(
                    "the kernel has no {feature} (not built in, and modprobe could not load it)"
                ),
            )
        })
        .collect()
}

/// The units provision runs on `host`, without `.service`.
fn units_of(cluster: &Cluster, host: &Host) -> Vec<&'static str> {
    let mut units = vec![
        "kubelet",
        crate::runtime::of(cluster.runtime).service(),
        "kube-proxy",
    ];
    if crate::cni::policy_engine::enabled(cluster) {
        units.push(crate::cni::policy_engine::SERVICE);
    }
    if host.control_plane {
        units.push("etcd");
        units.extend(crate::phases::control_plane::COMPONENTS);
    }
    units
}

/// Drop-ins of another installation on the units provision writes: one that sets ExecStart
/// (kubeadm's package ships `10-kubeadm.conf` for the kubelet) makes the unit run its command
/// instead of provision's, whatever provision's unit file says (another binary, none of
/// provision's flags); others add settings beside it (a proxy's environment), said as warnings.
fn unit_drop_ins(cluster: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    let units = units_of(cluster, host);
    f.drop_ins
        .iter()
        .filter(|d| units.contains(&d.unit.as_str()))
        .map(|d| {
            if d.replaces_command {
                error(
                    "UnitDropIn",
                    format!(
                        "{} replaces the command of {}.service (ExecStart=): the unit would run that instead of what provision installs (it comes with another installation, such as the kubeadm package's 10-kubeadm.conf); remove it, or the package that owns it (`dpkg -S {p}` or `rpm -qf {p}` names it), and run again",
                        d.path, d.unit, p = d.path
                    ),
                )
            } else {
                warning(
                    "UnitDropIn",
                    format!(
                        "{} also applies to {}.service, beside provision's unit file: check its settings are wanted",
                        d.path, d.unit
                    ),
                )
            }
        })
        .collect()
}

/// CNI configurations that sort before the cluster network's own: the runtime would give pods
/// their network (an earlier cluster's, which `kubeadm reset` leaves, or another tool's).
fn cni_configs(cluster: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    let cni = crate::cni::of(cluster.cni);
    let ours = cni.config().rsplit('/').next().unwrap_or_default();
    let mut first: Vec<&String> = f
        .cni_configs
        .iter()
        .filter(|name| name.as_str() < ours)
        .collect();
    first.sort();
    first
        .into_iter()
        .map(|name| {
            error(
                "CNIConfig",
                format!(
                    "{dir}/{name} sorts before {ours}, the configuration of the cluster's network ({}): the runtime gives pods the network of the first file in {dir}, so pods would get that one (an earlier cluster's or another tool's; `kubeadm reset` leaves them): remove it and run again",
                    cni.name(),
                    dir = crate::cni::NET_D,
                ),
            )
        })
        .collect()
}

fn hostname(_: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    let hostname = f.get("hostname");
    if !is_dns_subdomain(hostname) {
        vec![error(
            "Hostname",
            format!(
                "hostname {hostname:?} is not a valid lowercase RFC 1123 name: set one with hostnamectl"
            ),
        )]
    } else if hostname != host.name {
        vec![warning(
            "Hostname",
            format!(
                "hostname is {hostname:?}; the node will be registered as {:?}",
                host.name
            ),
        )]
    } else {
        Vec::new()
    }
}

fn machine_id(_: &Cluster, _: &Host, f: &Facts) -> Vec<Finding> {
    if f.get("machine_id").len() == 32 {
        return Vec::new();
    }
    vec![error(
        "MachineID",
        "/etc/machine-id is empty or malformed: run `systemd-machine-id-setup`".into(),
    )]
}

fn node_ip(_: &Cluster, host: &Host, f: &Facts) -> Vec<Finding> {
    if host.address.parse::<std::net::IpAddr>().is_err() || f.addresses.contains(&host.address) {
        return Vec::new();
    }
    vec![warning(
        "NodeIP",
        format!(
            "{} is not an address of this host (NAT?): other nodes must reach it there",
            host.address
        ),
    )]
}

/// Checks that compare hosts: what no single-host tool can see.
pub fn cluster_checks(facts: &[(&Host, &Facts)]) -> Vec<(String, Finding)> {
    let mut out = Vec::new();
    let mut by_key = |key: &str, check: &str, what: &str, fix: &str| {
        let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
        for (h, f) in facts {
            let v = f.get(key);
            if !v.is_empty() {
                seen.entry(v).or_default().push(&h.name);
            }
        }
        for (h, f) in facts {
            let others: Vec<&str> = seen
                .get(f.get(key))
                .map(|v| v.iter().copied().filter(|n| *n != h.name).collect())
                .unwrap_or_default();
            if !others.is_empty() {
                out.push((
                    h.name.clone(),
                    error(
                        check,
                        format!(
                            "{what} {:?} is shared with {}: {fix}",
                            f.get(key),
                            others.join(", ")
                        ),
                    ),
                ));
            }
        }
    };
    by_key(
        "hostname",
        "DuplicateHostname",
        "hostname",
        "give each host its own hostname",
    );
    by_key(
        "machine_id",
        "DuplicateMachineID",
        "machine-id",
        "cloned machines? run `rm /etc/machine-id && systemd-machine-id-setup` on the clones",
    );
    if facts.len() > 1 {
        let mut offsets: Vec<f64> = facts.iter().map(|(_, f)| f.clock_offset).collect();
        offsets.sort_by(|a, b| a.total_cmp(b));
        let median = offsets[offsets.len() / 2];
        for (h, f) in facts {
            let skew = f.clock_offset - median;
            if skew.abs() > MAX_CLOCK_SKEW_SECONDS {
                out.push((
                    h.name.clone(),
                    error(
                        "ClockSkew",
                        format!("the clock is {skew:+.1}s off the other hosts (limit {MAX_CLOCK_SKEW_SECONDS}s): certificates and etcd need synchronized clocks; enable NTP (timedatectl set-ntp true)"),
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Eviction, SshTarget};
    use crate::version::Version;

    fn host(name: &str, cp: bool) -> Host {
        Host {
            name: name.into(),
            address: "10.0.0.1".into(),
            control_plane: cp,
            worker: !cp,
            labels: Default::default(),
            taints: vec![],
            // the range the inventory gives its first node
            pod_cidr: cluster().hosts[0].pod_cidr,
            arch: crate::inventory::Arch::Amd64,
            ssh: SshTarget {
                address: "10.0.0.1".into(),
                port: 22,
                user: "root".into(),
                identity_file: None,
                known_hosts_file: "/dev/null".into(),
                bastion: None,
                sudo: false,
                connect_timeout_seconds: 1,
                command_timeout_seconds: 1,
            },
        }
    }

    fn cluster() -> Cluster {
        let text = "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  kubernetesVersion: 1.37.2\n  hosts:\n  - {name: n1, address: 10.0.0.1, roles: [control-plane]}\n";
        crate::cluster::from_text(text)
    }

    const GOOD: &str = "uid=0\npid1=systemd\nsystem_state=running\nos=debian 12\narch=x86_64\ncpus=2\nmem_kb=24000000\nswaps=0\ncgroup_fs=cgroup2fs\ncgroup_controllers=cpuset cpu io memory pids\nfeature=overlay\nfeature=bridge\nfeature=br_netfilter\nfeature=vxlan\nhostname=n1\nmachine_id=0123456789abcdef0123456789abcdef\nlisten=22 sshd\naddr=10.0.0.1\n";

    fn checks(text: &str, cp: bool) -> Vec<String> {
        host_checks(&cluster(), &host("n1", cp), &Facts::parse(text))
            .into_iter()
            .map(|f| f.check)
            .collect()
    }

    #[test]
    fn a_good_host_passes() {
        assert!(checks(GOOD, true).is_empty(), "{:?}", checks(GOOD, true));
    }

    #[test]
    fn swap_ports_and_features_are_named() {
        let bad = GOOD
            .replace("swaps=0", "swaps=1")
            .replace("feature=vxlan\n", "")
            + "listen=6443 nginx\nlisten=10250 kubelet\n";
        assert_eq!(
            checks(&bad, true),
            ["Swap", "Port-6443", "KernelFeature-vxlan"]
        );
        // a worker does not need 6443
        assert_eq!(checks(&bad, false), ["Swap", "KernelFeature-vxlan"]);
        // a running control plane holds its own ports (names cut to 15 characters by the kernel)
        let running = GOOD.to_string()
            + "listen=10257 kube-controller\nlisten=10259 kube-scheduler\nlisten=6443 kube-apiserver\n";
        assert!(
            checks(&running, true).is_empty(),
            "{:?}",
            checks(&running, true)
        );
        let other = GOOD.to_string() + "listen=10257 kube-controlled\n";
        assert_eq!(checks(&other, true), ["Port-10257"]);
    }

    #[test]
    fn a_disk_below_the_eviction_threshold_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let gib = 1u64 << 30;
        let with_disk = |free: u64| GOOD.to_string() + &format!("disk={} {free}\n", 100 * gib);
        let found = |c: &Cluster, free: u64| {
            host_checks(c, &host("n1", false), &Facts::parse(&with_disk(free)))
        };
        // the kubelet's default: 15% for images
        let low = found(&cluster(), 14 * gib);
        assert_eq!(low.len(), 1, "{low:?}");
        assert_eq!(
            (low[0].check.as_str(), low[0].level),
            ("DiskSpace", Level::Error)
        );
        assert!(
            low[0].message.contains("14.0 GiB free of 100.0 GiB")
                && low[0].message.contains("imagefs.available 15%")
                && low[0].message.contains("spec.kubelet.evictionHard"),
            "{}",
            low[0].message
        );
        let near = found(&cluster(), 15 * gib + gib / 2);
        assert_eq!((near.len(), near[0].level), (1, Level::Warning));
        assert!(found(&cluster(), 40 * gib).is_empty());
        // lower thresholds in the inventory make the same disk fine
        let mut c = cluster();
        c.eviction = Eviction::with(
            &[("imagefs.available", "2Gi"), ("nodefs.available", "1Gi")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .map_err(|e| format!("{e:?}"))?;
        assert!(found(&c, 14 * gib).is_empty());
        Ok(())
    }

    #[test]
    fn drop_ins_that_replace_a_units_command_are_refused_others_said() {
        let with = GOOD.to_string()
            + "dropin=kubelet command /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf\n\
               dropin=kubelet command /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf\n\
               dropin=containerd settings /etc/systemd/system/containerd.service.d/http-proxy.conf\n\
               dropin=etcd command /etc/systemd/system/etcd.service.d/override.conf\n\
               dropin=crio command /etc/systemd/system/crio.service.d/override.conf\n";
        let facts = Facts::parse(&with);
        // /lib and /usr/lib are one directory on merged-/usr systems: each path once
        assert_eq!(facts.drop_ins.len(), 4, "{:?}", facts.drop_ins);
        let found = |cp: bool| {
            host_checks(&cluster(), &host("n1", cp), &facts)
                .into_iter()
                .map(|f| (f.level, f.message))
                .collect::<Vec<_>>()
        };
        let control_plane = found(true);
        assert_eq!(control_plane.len(), 3, "{control_plane:?}");
        let (level, kubeadm) = &control_plane[0];
        assert_eq!(*level, Level::Error);
        assert!(
            kubeadm.starts_with(
                "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf replaces the command of kubelet.service"
            ) && kubeadm.contains("remove it"),
            "{kubeadm}"
        );
        assert_eq!(control_plane[1].0, Level::Warning);
        assert!(
            control_plane[1]
                .1
                .contains("http-proxy.conf also applies to containerd.service"),
            "{control_plane:?}"
        );
        assert!(
            control_plane[2].1.contains("etcd.service"),
            "{control_plane:?}"
        );
        // a worker runs no etcd, and a containerd cluster no CRI-O: their drop-ins change nothing
        let worker = found(false);
        assert_eq!(worker.len(), 2, "{worker:?}");
        assert!(
            worker
                .iter()
                .all(|(_, m)| !m.contains("etcd") && !m.contains("crio"))
        );
    }

    #[test]
    fn cni_configurations_that_sort_first_are_refused() {
        let with = |names: &[&str]| {
            let text = names
                .iter()
                .fold(GOOD.to_string(), |t, n| t + &format!("cni_config={n}\n"));
            host_checks(&cluster(), &host("n1", false), &Facts::parse(&text))
        };
        // the cluster's own and those after it are not the pods' network
        assert!(with(&["10-provision.conflist", "87-podman-bridge.conflist"]).is_empty());
        let found = with(&[
            "10-provision.conflist",
            "10-flannel.conflist",
            "05-cilium.conflist",
        ]);
        let messages: Vec<&str> = found.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(found.len(), 2, "{messages:?}");
        assert!(
            found
                .iter()
                .all(|f| f.check == "CNIConfig" && f.level == Level::Error)
        );
        assert!(
            messages[0].starts_with(
                "/etc/cni/net.d/05-cilium.conflist sorts before 10-provision.conflist, the configuration of the cluster's network (builtin)"
            ) && messages[0].contains("remove it"),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].starts_with("/etc/cni/net.d/10-flannel.conflist"),
            "{}",
            messages[1]
        );
    }

    #[test]
    fn limits_that_change_the_configuration_are_said() {
        let limited = GOOD.to_string() + "oom_score_locked=1\nconntrack_read_only=1\n";
        let found = host_checks(&cluster(), &host("n1", false), &Facts::parse(&limited));
        let names: Vec<&str> = found.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(names, ["OomScoreAdj", "ConntrackReadOnly"]);
        assert!(found.iter().all(|f| f.level == Level::Warning));
    }

    #[test]
    fn a_host_without_ipset_is_refused_while_the_policy_engine_runs() {
        let bare = GOOD.to_string() + "missing_commands=ipset iptables-restore \n";
        let found = host_checks(&cluster(), &host("n1", false), &Facts::parse(&bare));
        let engine: Vec<&Finding> = found
            .iter()
            .filter(|f| f.check == "NetworkPolicyCommands")
            .collect();
        assert_eq!(engine.len(), 1, "{found:?}");
        assert_eq!(engine[0].level, Level::Error);
        assert!(
            engine[0]
                .message
                .starts_with("ipset, iptables-restore not found")
                && engine[0].message.contains("spec.cni.networkPolicy: false"),
            "{}",
            engine[0].message
        );
        // every command the engine runs is looked for
        for c in crate::cni::policy_engine::HOST_COMMANDS {
            assert!(
                super::super::facts::FACTS_SCRIPT.contains(&format!(" {c}")),
                "{c}"
            );
        }
    }

    #[test]
    fn a_vip_wants_its_engines_its_port_and_the_control_planes_network()
    -> Result<(), Box<dyn std::error::Error>> {
        let text = "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  controlPlaneEndpoint: {vip: 10.0.0.100}\n  hosts:\n  - {name: n1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: n2, address: 10.0.0.2, roles: [worker]}\n";
        let mut c = crate::cluster::from_text(text);
        c.version = Version::parse("1.37.2")?;
        let found = |facts: &str, cp: bool| -> Vec<Finding> {
            vip_endpoint(&c, &host("n1", cp), &Facts::parse(facts))
        };
        let good = GOOD.to_string() + "net=10.0.0.1/24\n";
        assert!(found(&good, true).is_empty(), "{:?}", found(&good, true));
        let bare = good.clone() + "missing_commands=keepalived haproxy \n";
        let cp = found(&bare, true);
        assert_eq!(cp.len(), 1, "{cp:?}");
        assert!(
            cp[0].message.starts_with("keepalived, haproxy not found")
                && cp[0].message.contains("apt-get install keepalived haproxy"),
            "{}",
            cp[0].message
        );
        // a worker runs no keepalived
        assert!(
            found(&bare, false)[0]
                .message
                .starts_with("haproxy not found")
        );
        let taken = good.clone() + "listen=6444 nginx\n";
        assert_eq!(found(&taken, true)[0].check, "Port-6444");
        assert!(found(&(good.clone() + "listen=6444 haproxy\n"), true).is_empty());
        let elsewhere = GOOD.to_string() + "net=10.0.0.1/25\n";
        let far = found(&elsewhere.replace("10.0.0.1/25", "10.0.0.1/30"), true);
        assert_eq!(far.len(), 1, "{far:?}");
        assert!(
            far[0]
                .message
                .contains("outside the network of 10.0.0.1 (10.0.0.0/30)"),
            "{}",
            far[0].message
        );
        assert!(found(&elsewhere, true).is_empty());
        for cmd in crate::ha::vip::HOST_COMMANDS
            .iter()
            .chain(&crate::ha::api_proxy::HOST_COMMANDS)
        {
            assert!(
                super::super::facts::FACTS_SCRIPT.contains(&format!(" {cmd}")),
                "{cmd}"
            );
        }
        Ok(())
    }

    #[test]
    fn small_control_plane_and_non_root() {
        let bad = GOOD
            .replace("uid=0", "uid=1000")
            .replace("cpus=2", "cpus=1")
            .replace("mem_kb=24000000", "mem_kb=1000000");
        assert_eq!(checks(&bad, true), ["IsPrivilegedUser", "NumCPU", "Mem"]);
    }

    #[test]
    fn duplicates_and_skew_across_hosts() {
        let (a, b, c) = (host("a", true), host("b", false), host("c", false));
        let fa = Facts::parse("hostname=a\nmachine_id=m1");
        let fb = Facts::parse("hostname=b\nmachine_id=m1");
        let mut fc = Facts::parse("hostname=a\nmachine_id=m3");
        fc.clock_offset = 30.0;
        let found: Vec<(String, String)> = cluster_checks(&[(&a, &fa), (&b, &fb), (&c, &fc)])
            .into_iter()
            .map(|(h, f)| (h, f.check))
            .collect();
        assert!(found.contains(&("a".into(), "DuplicateHostname".into())));
        assert!(found.contains(&("c".into(), "DuplicateHostname".into())));
        assert!(found.contains(&("a".into(), "DuplicateMachineID".into())));
        assert!(found.contains(&("b".into(), "DuplicateMachineID".into())));
        assert!(found.contains(&("c".into(), "ClockSkew".into())));
        assert!(!found.contains(&("b".into(), "ClockSkew".into())));
    }
}
