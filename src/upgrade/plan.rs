//! The upgrade plan, as a pure function of what runs and what the inventory wants: per host and
//! component *from → to*, in kubeadm's order (etcd members one at a time, then each control
//! plane's components, then the add-ons, then the nodes: control planes first, workers in
//! batches), and what refuses the upgrade before anything changes.

use crate::version::Version;
use serde::Serialize;
use std::collections::BTreeMap;

/// The kubelet may be at most this many minors older than the API server (the Kubernetes
/// version skew policy since 1.28); kube-proxy the same.
pub const KUBELET_SKEW: u32 = 3;
/// A certificate that expires within this is refused: it could expire during the run.
pub const CERTIFICATE_MARGIN_SECONDS: i64 = 86_400;

/// What a host showed.
#[derive(Debug, Clone, Default)]
pub struct HostSeen {
    pub name: String,
    pub control_plane: bool,
    pub reachable: bool,
    /// The Node's Ready condition; None when there is no Node of that name.
    pub ready: Option<bool>,
    /// Component → the version its binary reports ("-" when absent).
    pub versions: BTreeMap<String, String>,
}

/// What the cluster showed.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub hosts: Vec<HostSeen>,
    /// Members that are not healthy: (host, why).
    pub etcd_unhealthy: Vec<(String, String)>,
    /// The CoreDNS Deployment's image tag, when there is one.
    pub coredns: Option<String>,
    /// (host, certificate, seconds left; None when missing or unreadable).
    pub certificates: Vec<(String, String, Option<i64>)>,
}

/// What the inventory wants.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub kubernetes: Version,
    /// Host → component → version (the bundle's, for that host's roles).
    pub hosts: BTreeMap<String, BTreeMap<String, String>>,
    pub coredns: Option<String>,
    /// Workers upgraded at once.
    pub batch: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    /// 1, 2, ...: the order it goes in; steps of one stage and host go together.
    pub order: usize,
    /// `etcd`, `control-plane`, `addons`, `control-plane node`, `workers, batch N`.
    pub stage: String,
    /// The host, or `cluster` for the add-ons.
    pub host: String,
    pub component: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The API servers' version now (the oldest), when any reports one.
    pub from: Option<String>,
    pub to: String,
    pub steps: Vec<Step>,
    /// Why the upgrade may not start, each naming what and what to do; empty when it may.
    pub refusals: Vec<String>,
    /// Objects reached through API versions the target no longer serves.
    pub removed_apis: Vec<super::deprecated::Removed>,
    /// Certificates renewed on the way (they expire within the renewal window): host, name,
    /// days left.
    pub renewals: Vec<(String, String, i64)>,
    /// With `--chain`: every version the chain goes through, this plan being its first step's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

impl Plan {
    pub fn nothing_to_do(&self) -> bool {
        self.steps.is_empty()
    }
}

const ETCD: [&str; 1] = ["etcd"];
const CONTROL_PLANE: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];
/// A node's own, in the order a node goes: the runtime, then the agents.
const NODE: [&str; 4] = ["containerd", "kubelet", "kube-proxy", "kube-router"];
pub(super) const KUBERNETES: [&str; 5] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

fn parse(v: &str) -> Option<Version> {
    Version::parse(v).ok()
}

/// The plan from what is `seen` to what is `wanted`.
pub fn plan(seen: &Seen, wanted: &Wanted) -> Plan {
    let to = wanted.kubernetes;
    let from = seen
        .hosts
        .iter()
        .filter(|h| h.control_plane)
        .filter_map(|h| h.versions.get("kube-apiserver").and_then(|v| parse(v)))
        .min();
    let mut refusals = health_refusals(seen);
    refusals.extend(version_refusals(seen, from, to));
    let steps = steps(seen, wanted);
    Plan {
        from: from.map(|v| v.to_string()),
        to: to.to_string(),
        steps,
        refusals,
        removed_apis: Vec::new(),
        renewals: renewals(seen),
        chain: Vec::new(),
    }
}

/// The certificates the upgrade's certs phases re-issue: provision's leaves and kubeconfigs
/// within the renewal window (CAs are not renewed; kubelets renew their own).
fn renewals(seen: &Seen) -> Vec<(String, String, i64)> {
    let window = crate::x509::RENEW_BEFORE_DAYS as i64 * 86_400;
    let renewable = crate::phases::certs::renewable();
    seen.certificates
        .iter()
        .filter(|(_, cert, _)| renewable.contains(cert.trim_end_matches(".conf")))
        .filter_map(|(host, cert, left)| match left {
            Some(s) if *s < window => Some((host.clone(), cert.clone(), s / 86_400)),
            _ => None,
        })
        .collect()
}

/// An upgrade starts from a healthy cluster: every host answers, every Node is Ready, every etcd
/// member is healthy, no certificate expires during the run.
fn health_refusals(seen: &Seen) -> Vec<String> {
    let mut r = Vec::new();
    for h in &seen.hosts {
        if !h.reachable {
            r.push(format!("{}: not reachable over SSH", h.name));
        } else if h.ready != Some(true) {
            r.push(format!(
                "{}: the Node is {}: an upgrade starts from a healthy cluster (`provision status -i FILE` says what is off)",
                h.name,
                if h.ready.is_none() { "missing" } else { "not Ready" }
            ));
        }
    }
    for (host, why) in &seen.etcd_unhealthy {
        r.push(format!("{host}: etcd member unhealthy ({why}): an upgrade restarts members one at a time and needs every one healthy"));
    }
    for (host, cert, left) in &seen.certificates {
        match left {
            Some(s) if *s < CERTIFICATE_MARGIN_SECONDS => r.push(format!(
                "{host}: {cert} expires within a day, during the upgrade: `provision certs renew {cert}` first"
            )),
            _ => {}
        }
    }
    r
}

/// One minor at a time, never down, and no kubelet left further behind than the skew policy
/// allows once the API servers run the new version.
fn version_refusals(seen: &Seen, from: Option<Version>, to: Version) -> Vec<String> {
    let mut r = Vec::new();
    let Some(from) = from else {
        r.push("no control plane reports its API server's version: is the cluster up (`provision status -i FILE`)?".into());
        return r;
    };
    for h in &seen.hosts {
        for c in KUBERNETES {
            if let Some(v) = h.versions.get(c).and_then(|v| parse(v))
                && v > to
            {
                r.push(format!(
                    "{}: {c} runs {v}, newer than the inventory's {to}: that is a downgrade, which provision does not do (put kubernetesVersion back to {v}, or restore an etcd snapshot taken before the upgrade onto machines reset to that version)",
                    h.name
                ));
            }
        }
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        let next = from.minor + 1;
        let through = match super::chain::versions(from, to) {
            Ok(chain) => format!(
                ", or go through every minor with --chain ({}, verify between steps)",
                super::chain::arrows(Some(from), &chain)
            ),
            Err(_) => String::new(),
        };
        r.push(format!(
            "{from} → {to} skips a minor: Kubernetes is upgraded one minor at a time; set kubernetesVersion to 1.{next}, upgrade, then to {to}{through}"
        ));
    }
    for h in &seen.hosts {
        for c in ["kubelet", "kube-proxy"] {
            if let Some(v) = h.versions.get(c).and_then(|v| parse(v))
                && v.minor + KUBELET_SKEW < to.minor
            {
                r.push(format!(
                    "{}: {c} {v} would be {} minors behind the API server {to} (the skew policy allows {KUBELET_SKEW}): upgrade it in smaller steps first",
                    h.name,
                    to.minor - v.minor
                ));
            }
        }
    }
    r
}

/// What changes, in order.
fn steps(seen: &Seen, wanted: &Wanted) -> Vec<Step> {
    let mut out = Vec::new();
    let mut add = |stage: &str, host: &HostSeen, components: &[&str]| {
        let want = wanted.hosts.get(&host.name);
        let mut changed: Vec<(String, String, String)> = Vec::new();
        for c in components {
            let Some(to) = want.and_then(|w| w.get(*c)) else {
                continue;
            };
            let from = host.versions.get(*c).cloned().unwrap_or_else(|| "-".into());
            if &from != to {
                changed.push((c.to_string(), from, to.clone()));
            }
        }
        if changed.is_empty() {
            return;
        }
        let order = out.iter().map(|s: &Step| s.order).max().unwrap_or(0) + 1;
        for (component, from, to) in changed {
            out.push(Step {
                order,
                stage: stage.to_string(),
                host: host.name.clone(),
                component,
                from,
                to,
            });
        }
    };
    let cps: Vec<&HostSeen> = seen.hosts.iter().filter(|h| h.control_plane).collect();
    for h in &cps {
        add("etcd", h, &ETCD);
    }
    for h in &cps {
        add("control-plane", h, &CONTROL_PLANE);
    }
    let order = out.iter().map(|s| s.order).max().unwrap_or(0) + 1;
    if let Some(to) = &wanted.coredns {
        let from = seen.coredns.clone().unwrap_or_else(|| "-".into());
        if &from != to {
            out.push(Step {
                order,
                stage: "addons".into(),
                host: "cluster".into(),
                component: "coredns".into(),
                from,
                to: to.clone(),
            });
        }
    }
    // `group`: the hosts that go together (one order number)
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |stage: &str, group: &str, host: &HostSeen| {
        let want = wanted.hosts.get(&host.name);
        for c in NODE {
            let Some(to) = want.and_then(|w| w.get(c)) else {
                continue;
            };
            let from = host.versions.get(c).cloned().unwrap_or_else(|| "-".into());
            if &from != to {
                let next = out.iter().map(|s| s.order).max().unwrap_or(0) + 1;
                let order = *groups.entry(group.to_string()).or_insert(next);
                out.push(Step {
                    order,
                    stage: stage.to_string(),
                    host: host.name.clone(),
                    component: c.to_string(),
                    from,
                    to: to.clone(),
                });
            }
        }
    };
    // control planes as nodes, one at a time (each is its own stage), then workers in batches
    for h in &cps {
        add("control-plane node", &h.name, h);
    }
    let workers: Vec<&HostSeen> = seen
        .hosts
        .iter()
        .filter(|h| !h.control_plane)
        .filter(|h| {
            let want = wanted.hosts.get(&h.name);
            NODE.iter().any(|c| {
                want.and_then(|w| w.get(*c))
                    .is_some_and(|to| h.versions.get(*c) != Some(to))
            })
        })
        .collect();
    for (i, batch) in workers.chunks(wanted.batch.max(1)).enumerate() {
        let stage = format!("workers, batch {}", i + 1);
        for h in batch {
            add(&stage, &stage, h);
        }
    }
    out
}

/// How many workers go at once: `N`, or `P%` of the workers (rounded down, at least 1).
pub fn batch_size(max_unavailable: &str, workers: usize) -> Result<usize, String> {
    let bad = || {
        format!(
            "--max-unavailable {max_unavailable:?}: write a number of workers (1) or a percentage of them (25%)"
        )
    };
    let size = match max_unavailable.strip_suffix('%') {
        Some(p) => {
            let p: usize = p.parse().map_err(|_| bad())?;
            if p == 0 || p > 100 {
                return Err(bad());
            }
            workers * p / 100
        }
        None => {
            let n: usize = max_unavailable.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            n
        }
    };
    Ok(size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, cp: bool, kube: &str) -> HostSeen {
        let mut versions = BTreeMap::new();
        for c in ["kubelet", "kube-proxy"] {
            versions.insert(c.to_string(), kube.to_string());
        }
        versions.insert("containerd".into(), "2.3.4".into());
        if cp {
            for c in CONTROL_PLANE {
                versions.insert(c.to_string(), kube.to_string());
            }
            versions.insert("etcd".into(), "3.6.14".into());
        }
        HostSeen {
            name: name.into(),
            control_plane: cp,
            reachable: true,
            ready: Some(true),
            versions,
        }
    }

    fn seen(kube: &str) -> Seen {
        Seen {
            hosts: vec![
                host("cp1", true, kube),
                host("cp2", true, kube),
                host("w1", false, kube),
                host("w2", false, kube),
                host("w3", false, kube),
            ],
            coredns: Some("1.14.2".into()),
            ..Default::default()
        }
    }

    fn wanted(kube: &str, batch: usize) -> Result<Wanted, String> {
        let mut hosts = BTreeMap::new();
        for h in seen(kube).hosts {
            let mut w: BTreeMap<String, String> = h
                .versions
                .keys()
                .map(|c| (c.clone(), kube.to_string()))
                .collect();
            w.insert("containerd".into(), "2.3.4".into());
            if h.control_plane {
                w.insert("etcd".into(), "3.6.14".into());
            }
            hosts.insert(h.name, w);
        }
        Ok(Wanted {
            kubernetes: Version::parse(kube)?,
            hosts,
            coredns: Some("1.14.6".into()),
            batch,
        })
    }

    fn order(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| format!("{} {} {} {}", s.order, s.stage, s.host, s.component))
            .collect()
    }

    #[test]
    fn one_minor_goes_control_planes_first_then_addons_then_nodes_in_batches() -> Result<(), String>
    {
        let p = plan(&seen("1.36.4"), &wanted("1.37.2", 2)?);
        assert!(p.refusals.is_empty(), "{:?}", p.refusals);
        assert_eq!(p.from.as_deref(), Some("1.36.4"));
        assert_eq!(p.to, "1.37.2");
        assert_eq!(
            order(&p),
            [
                "1 control-plane cp1 kube-apiserver",
                "1 control-plane cp1 kube-controller-manager",
                "1 control-plane cp1 kube-scheduler",
                "2 control-plane cp2 kube-apiserver",
                "2 control-plane cp2 kube-controller-manager",
                "2 control-plane cp2 kube-scheduler",
                "3 addons cluster coredns",
                "4 control-plane node cp1 kubelet",
                "4 control-plane node cp1 kube-proxy",
                "5 control-plane node cp2 kubelet",
                "5 control-plane node cp2 kube-proxy",
                "6 workers, batch 1 w1 kubelet",
                "6 workers, batch 1 w1 kube-proxy",
                "6 workers, batch 1 w2 kubelet",
                "6 workers, batch 1 w2 kube-proxy",
                "7 workers, batch 2 w3 kubelet",
                "7 workers, batch 2 w3 kube-proxy",
            ]
        );
        let s = &p.steps[0];
        assert_eq!((s.from.as_str(), s.to.as_str()), ("1.36.4", "1.37.2"));
        Ok(())
    }

    #[test]
    fn etcd_goes_first_when_its_version_moves_and_nothing_is_planned_when_nothing_moved()
    -> Result<(), String> {
        let mut w = wanted("1.37.2", 1)?;
        for h in ["cp1", "cp2"] {
            w.hosts
                .get_mut(h)
                .map(|v| v.insert("etcd".into(), "3.6.15".into()));
        }
        let p = plan(&seen("1.37.2"), &w);
        assert_eq!(
            order(&p)[..2],
            ["1 etcd cp1 etcd".to_string(), "2 etcd cp2 etcd".to_string()]
        );
        let mut same = wanted("1.37.2", 1)?;
        same.coredns = Some("1.14.2".into());
        let none = plan(&seen("1.37.2"), &same);
        assert!(none.nothing_to_do() && none.refusals.is_empty(), "{none:?}");
        Ok(())
    }

    #[test]
    fn two_minors_a_downgrade_and_an_unhealthy_cluster_are_refused_saying_what_to_do()
    -> Result<(), String> {
        let skip = plan(&seen("1.35.8"), &wanted("1.37.2", 1)?);
        assert_eq!(skip.refusals.len(), 1, "{:?}", skip.refusals);
        assert!(
            skip.refusals[0].contains("1.35.8 → 1.37.2 skips a minor")
                && skip.refusals[0].contains("set kubernetesVersion to 1.36")
                && skip.refusals[0]
                    .contains("--chain (1.35.8 → 1.36.4 → 1.37.2, verify between steps)"),
            "{}",
            skip.refusals[0]
        );
        let down = plan(&seen("1.37.2"), &wanted("1.36.4", 1)?);
        assert!(
            down.refusals
                .iter()
                .any(|r| r.starts_with("cp1: kube-apiserver runs 1.37.2, newer than the inventory's 1.36.4: that is a downgrade")),
            "{:?}",
            down.refusals
        );
        let mut sick = seen("1.36.4");
        sick.hosts[3].ready = Some(false);
        sick.hosts[4].reachable = false;
        sick.etcd_unhealthy = vec![("cp2".into(), "context deadline exceeded".into())];
        sick.certificates = vec![("cp1".into(), "apiserver".into(), Some(3_600))];
        let r = plan(&sick, &wanted("1.37.2", 1)?).refusals;
        for want in [
            "w2: the Node is not Ready",
            "w3: not reachable over SSH",
            "cp2: etcd member unhealthy (context deadline exceeded)",
            "cp1: apiserver expires within a day, during the upgrade: `provision certs renew apiserver` first",
        ] {
            assert!(r.iter().any(|x| x.starts_with(want)), "{want}: {r:?}");
        }
        Ok(())
    }

    #[test]
    fn leaves_and_kubeconfigs_within_the_renewal_window_are_renewed_on_the_way()
    -> Result<(), String> {
        let mut s = seen("1.36.4");
        let day = 86_400;
        s.certificates = vec![
            ("cp1".into(), "apiserver".into(), Some(10 * day + 5)),
            ("cp1".into(), "admin.conf".into(), Some(29 * day)),
            ("cp2".into(), "apiserver".into(), Some(200 * day)),
            // CAs are not renewed so, kubelets renew their own
            ("cp1".into(), "ca".into(), Some(5 * day)),
            ("w1".into(), "kubelet-client".into(), Some(5 * day)),
            ("w1".into(), "kube-proxy.conf".into(), None),
        ];
        let p = plan(&s, &wanted("1.37.2", 1)?);
        assert_eq!(
            p.renewals,
            [
                ("cp1".to_string(), "apiserver".to_string(), 10),
                ("cp1".to_string(), "admin.conf".to_string(), 29)
            ]
        );
        assert!(p.refusals.is_empty(), "{:?}", p.refusals);
        Ok(())
    }

    #[test]
    fn a_kubelet_too_far_behind_is_refused() -> Result<(), String> {
        let mut old = seen("1.36.4");
        old.hosts[2]
            .versions
            .insert("kubelet".into(), "1.33.0".into());
        let r = plan(&old, &wanted("1.37.2", 1)?).refusals;
        assert!(
            r.iter()
                .any(|x| x.starts_with("w1: kubelet 1.33.0 would be 4 minors behind")),
            "{r:?}"
        );
        old.hosts[2]
            .versions
            .insert("kubelet".into(), "1.34.0".into());
        assert!(plan(&old, &wanted("1.37.2", 1)?).refusals.is_empty());
        Ok(())
    }

    #[test]
    fn batches_are_a_count_or_a_share_of_the_workers() {
        assert_eq!(batch_size("1", 5), Ok(1));
        assert_eq!(batch_size("3", 5), Ok(3));
        assert_eq!(batch_size("50%", 5), Ok(2));
        assert_eq!(batch_size("10%", 5), Ok(1));
        for bad in ["0", "0%", "101%", "x", "-1"] {
            assert!(batch_size(bad, 5).is_err(), "{bad}");
        }
    }
}
