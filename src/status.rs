//! `provision status`: one read-only screen per cluster. Per host: roles, Ready, the versions
//! of its components, its units, and how many changes a dry run of init/join would make
//! (files and units that no longer match the inventory); then etcd's members and leader, the
//! API endpoint's health, and the certificates soonest to expire. Anything off is named as a
//! problem, and the exit code says whether there is one.

use crate::api;
use crate::cluster::Host;
use crate::output::Format;
use crate::phases::{self, Scope, expiration};
use crate::run::Ctx;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde::Serialize;
use std::collections::BTreeMap;

/// A certificate closer than this to its expiry is a problem (`provision certs renew`).
const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub cluster: String,
    pub kubernetes_version: String,
    pub endpoint: String,
    /// The endpoint's /readyz: "ok", or what it said.
    pub api: String,
    pub hosts: Vec<HostStatus>,
    pub etcd: Vec<EtcdMember>,
    /// Soonest to expire first.
    pub certificates: Vec<expiration::Row>,
    /// Everything that is off, each naming its host: empty when all is well.
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub roles: Vec<String>,
    pub reachable: bool,
    /// The Node's Ready condition; None when the API does not know the Node.
    pub ready: Option<bool>,
    /// Component → the version its binary reports ("-" when absent).
    pub versions: BTreeMap<String, String>,
    /// Unit → systemd's active state.
    pub units: BTreeMap<String, String>,
    /// What a dry run would change on this host; None when it could not run.
    pub pending_changes: Option<Vec<String>>,
    /// Why the dry run failed on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct EtcdMember {
    pub host: String,
    pub healthy: bool,
    pub leader: bool,
    pub version: String,
    pub db_size_bytes: u64,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Collects the status. `ctx` must be a dry run whose reporter captures its output (JSON): the
/// dry run of init/join that counts pending changes reports through it.
pub async fn collect(ctx: &Ctx) -> Status {
    let cluster = &ctx.cluster;
    let mut status = Status {
        cluster: cluster.name.clone(),
        kubernetes_version: cluster.version.to_string(),
        endpoint: cluster.endpoint.url(),
        ..Default::default()
    };
    status.api = api_health(ctx).await;
    if status.api != "ok" {
        status.problems.push(format!(
            "the API endpoint {}: {}",
            status.endpoint, status.api
        ));
    }
    let nodes = node_readiness(ctx).await;
    let hosts = futures::future::join_all(cluster.hosts.iter().map(|h| host_status(ctx, h))).await;
    for mut h in hosts {
        if let Some(host) = cluster.host(&h.name) {
            h.ready = nodes.as_ref().ok().and_then(|n| n.get(&host.name).copied());
        }
        status.hosts.push(h);
    }
    if let Err(e) = &nodes {
        status.problems.push(format!("cannot list the Nodes: {e}"));
    }
    pending_changes(ctx, &mut status.hosts).await;
    status.etcd =
        futures::future::join_all(cluster.control_planes().map(|h| etcd_member(ctx, h))).await;
    let (mut certificates, unreadable) = expiration::rows(ctx).await;
    certificates.sort_by_key(|r| r.residual_days.unwrap_or(i64::MIN));
    status.certificates = certificates;
    status.problems.extend(unreadable);
    let problems = problems_of(&status, &cluster.version.to_string());
    status.problems.extend(problems);
    if status.api == "ok" {
        for n in crate::upgrade::cordoned_by_upgrade(ctx)
            .await
            .unwrap_or_default()
        {
            status.problems.push(format!(
                "{n}: left cordoned by an upgrade that did not finish: run `provision upgrade apply -i FILE` again (it continues where it stopped)"
            ));
        }
    }
    status
}

async fn api_health(ctx: &Ctx) -> String {
    let client = match api::client(ctx, "admin").await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let request = match http::Request::get("/readyz").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    match client.request_text(request).await {
        Ok(text) => text.trim().to_string(),
        Err(e) => format!("/readyz: {e}"),
    }
}

/// Node name → Ready.
pub(crate) async fn node_readiness(ctx: &Ctx) -> Result<BTreeMap<String, bool>, String> {
    let client = api::client(ctx, "admin").await?;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .map(|n| {
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (n.metadata.name.unwrap_or_default(), ready)
        })
        .collect())
}

/// The units provision runs on `host`.
fn units_of(ctx: &Ctx, host: &Host) -> Vec<String> {
    let cluster = &ctx.cluster;
    let mut units = vec![
        crate::runtime::unit_name(cluster.runtime),
        "kubelet.service".to_string(),
        "kube-proxy.service".to_string(),
    ];
    units.extend(
        crate::cni::of(cluster.cni)
            .leftovers()
            .units
            .iter()
            .map(|u| format!("{u}.service")),
    );
    if host.control_plane {
        units.push("etcd.service".into());
        units.extend(
            phases::control_plane::COMPONENTS
                .iter()
                .map(|c| format!("{c}.service")),
        );
    }
    units
}

const COMPONENTS: [&str; 4] = ["kubelet", "kube-proxy", "containerd", "etcd"];
/// The control plane's own, read on control planes only.
const CONTROL_PLANE_COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

pub(crate) async fn host_status(ctx: &Ctx, host: &Host) -> HostStatus {
    let mut h = HostStatus {
        name: host.name.clone(),
        roles: host.roles().iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    let units = units_of(ctx, host);
    // etcd is ours on control planes only (a worker may have another one installed)
    let control_plane = CONTROL_PLANE_COMPONENTS
        .iter()
        .filter(|_| host.control_plane);
    let policy_engine = ["kube-router"]
        .into_iter()
        .filter(|_| crate::cni::policy_engine::enabled(&ctx.cluster));
    let components: Vec<&str> = COMPONENTS
        .iter()
        .copied()
        .filter(|c| host.control_plane || *c != "etcd")
        .chain(control_plane.copied())
        .chain(policy_engine)
        .collect();
    let out = match ctx.session(host).await {
        Ok(s) => s
            .run(&what_runs_script(&components, &units))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let Ok(out) = out else {
        return h;
    };
    h.reachable = true;
    (h.versions, h.units) = parse_what_runs(&out, &units);
    h
}

/// What runs: the executable of each component's unit (the old one until it restarts after a
/// version switch), else the one on PATH. One the bundle shipped is named by its versioned
/// directory (asking a binary costs a process start of tens of milliseconds, and an upgrade
/// check reads every component); others are asked, and kube-router says its version on
/// stderr. Then each unit's state. Two `systemctl` calls in all: each costs milliseconds.
fn what_runs_script(components: &[&str], units: &[String]) -> String {
    let mut script = format!(
        "v() {{ if [ \"${{2:-0}}\" != 0 ] && exe=$(readlink /proc/$2/exe 2>/dev/null); then \
         case $exe in {root}/$1/*/$1|\"{root}/$1/\"*\"/$1 (deleted)\") \
         ver=${{exe#{root}/$1/}}; echo \"${{ver%%/*}}\"; return ;; esac; b=/proc/$2/exe; \
         elif command -v \"$1\" >/dev/null 2>&1; then b=$1; else echo -; return; fi; \
         if [ \"$1\" = kube-router ]; then \"$b\" --version 2>&1 | head -n 1; \
         else \"$b\" --version 2>/dev/null | head -n 1; fi; }}\n\
         set -- $(systemctl show -p MainPID --value {} 2>/dev/null)\n",
        components.join(" "),
        root = crate::bundle::HOST_ROOT
    );
    for c in components {
        script.push_str(&format!(
            "echo \"version {c} $(v {c} \"$1\")\"; [ $# -gt 0 ] && shift\n"
        ));
    }
    script.push_str(&format!(
        "echo \"units $(systemctl is-active {} 2>/dev/null | tr '\\n' ' ')\"\n",
        units.join(" ")
    ));
    script
}

/// The versions and unit states `what_runs_script` printed; a unit it did not tell is `unknown`.
fn parse_what_runs(
    out: &str,
    units: &[String],
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut versions, mut states) = (BTreeMap::new(), BTreeMap::new());
    for line in out.lines() {
        if let Some(told) = line.strip_prefix("units ") {
            for (u, state) in units.iter().zip(told.split_whitespace()) {
                states.insert(u.clone(), state.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("version ") {
            let (c, said) = rest.split_once(' ').unwrap_or((rest, "-"));
            versions.insert(c.to_string(), version_in(said));
        }
    }
    for u in units {
        states
            .entry(u.clone())
            .or_insert_with(|| "unknown".to_string());
    }
    (versions, states)
}

/// The version in a `--version` line: `Kubernetes v1.37.2` → 1.37.2, `containerd
/// github.com/containerd/containerd/v2 v2.3.4 abc` → 2.3.4, `etcd Version: 3.6.14` → 3.6.14.
pub(crate) fn version_in(line: &str) -> String {
    line.split_whitespace()
        .map(|w| {
            w.trim_start_matches('v')
                .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        })
        .find(|w| {
            w.split('.').count() >= 2
                && w.split('.').all(|p| !p.is_empty())
                && w.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .unwrap_or("-")
        .to_string()
}

/// A dry run of init on the seed control plane and of join on the others, without the
/// checking phases and without the bundle (which could mean a download): the changes each
/// host would get.
async fn pending_changes(ctx: &Ctx, hosts: &mut [HostStatus]) {
    let cluster = &ctx.cluster;
    let skip = ["preflight".to_string(), "artifacts".into(), "verify".into()];
    let (init, join) = (phases::init_tree(), phases::join_tree());
    let first: Vec<Host> = cluster.seed_control_plane().cloned().into_iter().collect();
    let others: Vec<Host> = cluster
        .hosts
        .iter()
        .filter(|h| !cluster.is_seed_control_plane(h))
        .cloned()
        .collect();
    for (command, tree, targets) in [("init", &init, first), ("join", &join, others)] {
        let reachable: Vec<Host> = targets
            .into_iter()
            .filter(|t| hosts.iter().any(|h| h.name == t.name && h.reachable))
            .collect();
        if reachable.is_empty() {
            continue;
        }
        let Ok(selected) = phases::select(tree, None, &skip) else {
            continue;
        };
        let scope = Scope {
            hosts: reachable,
            preflight_hosts: Vec::new(),
        };
        phases::run(ctx, command, &selected, &scope).await;
    }
    let (mut changes, mut failed) = pending_by_host(&ctx.out.captured());
    for h in hosts.iter_mut().filter(|h| h.reachable) {
        h.dry_run_error = failed.remove(&h.name);
        if h.dry_run_error.is_none() {
            h.pending_changes = Some(changes.remove(&h.name).unwrap_or_default());
        }
    }
}

type ByHost<T> = BTreeMap<String, T>;

/// Per host, from the dry runs' JSON events: the changes each phase would make (once each),
/// and the first phase that failed.
fn pending_by_host(captured: &str) -> (ByHost<Vec<String>>, ByHost<String>) {
    let mut changes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for line in captured.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["event"] != "host" {
            continue;
        }
        let result = &event["result"];
        let host = result["host"].as_str().unwrap_or_default().to_string();
        if result["status"] == "failed" {
            let error = result["error"].as_str().unwrap_or("failed");
            failed.insert(
                host,
                format!("{}: {error}", event["phase"].as_str().unwrap_or("")),
            );
            continue;
        }
        let list = changes.entry(host).or_default();
        for c in result["changes"].as_array().into_iter().flatten() {
            let change = format!(
                "{}: {}",
                event["phase"].as_str().unwrap_or(""),
                c.as_str().unwrap_or_default()
            );
            // join's run acts on the seed too where a step acts on every node on join: the
            // same change, seen twice
            if !list.contains(&change) {
                list.push(change);
            }
        }
    }
    (changes, failed)
}

pub(crate) async fn etcd_member(ctx: &Ctx, host: &Host) -> EtcdMember {
    let mut m = EtcdMember {
        host: host.name.clone(),
        version: "-".into(),
        ..Default::default()
    };
    let script = phases::etcd::etcdctl("endpoint status -w json");
    let out = match ctx.session(host).await {
        Ok(s) => s.run(&script).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let parsed = out.and_then(|o| {
        serde_json::from_str::<serde_json::Value>(&o).map_err(|e| format!("etcdctl: {e}"))
    });
    match parsed {
        Ok(v) => {
            let s = &v[0]["Status"];
            m.healthy = s["header"]["member_id"].is_u64();
            m.leader = m.healthy && s["header"]["member_id"] == s["leader"];
            m.version = s["version"].as_str().unwrap_or("-").to_string();
            m.db_size_bytes = s["dbSize"].as_u64().unwrap_or_default();
            if !m.healthy {
                m.error = "no member in etcdctl's answer".into();
            }
        }
        Err(e) => m.error = e.lines().last().unwrap_or_default().to_string(),
    }
    m
}

/// What is off, each naming its host and what to do.
fn problems_of(s: &Status, version: &str) -> Vec<String> {
    let mut p = Vec::new();
    for h in &s.hosts {
        if !h.reachable {
            p.push(format!("{}: not reachable over SSH", h.name));
            continue;
        }
        match h.ready {
            Some(true) => {}
            Some(false) => p.push(format!("{}: the Node is not Ready", h.name)),
            None if s.api == "ok" => p.push(format!(
                "{}: no Node of that name: `provision join -i FILE --hosts {}`",
                h.name, h.name
            )),
            None => {}
        }
        for (unit, state) in &h.units {
            if state != "active" {
                p.push(format!(
                    "{}: {unit} is {state} (`journalctl -u {unit}` on the host)",
                    h.name
                ));
            }
        }
        for c in ["kubelet", "kube-proxy"] {
            match h.versions.get(c) {
                Some(v) if v != version => p.push(format!(
                    "{}: {c} is {v}, the inventory says {version}",
                    h.name
                )),
                _ => {}
            }
        }
        if let Some(e) = &h.dry_run_error {
            p.push(format!("{}: the dry run failed at {e}", h.name));
        }
        match &h.pending_changes {
            Some(c) if !c.is_empty() => p.push(format!(
                "{}: {} change{} pending ({})",
                h.name,
                c.len(),
                if c.len() == 1 { "" } else { "s" },
                c.join("; ")
            )),
            _ => {}
        }
    }
    if !s.etcd.is_empty() {
        for m in s.etcd.iter().filter(|m| !m.healthy) {
            p.push(format!("{}: etcd member unhealthy: {}", m.host, m.error));
        }
        if !s.etcd.iter().any(|m| m.leader) {
            p.push("etcd has no leader among the control planes".into());
        }
    }
    for c in &s.certificates {
        match c.residual_days {
            Some(d) if d < EXPIRY_WARNING_DAYS => p.push(format!(
                "{}: {} expires in {d} days (`provision certs renew {}`)",
                c.host, c.certificate, c.certificate
            )),
            None if c.certificate != "super-admin.conf" => {
                p.push(format!("{}: {}: {}", c.host, c.certificate, c.expires))
            }
            _ => {}
        }
    }
    p
}

/// The text screen.
pub fn print(s: &Status, format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        return;
    }
    println!(
        "cluster {} (Kubernetes {}), API {}: {}",
        s.cluster, s.kubernetes_version, s.endpoint, s.api
    );
    println!(
        "\n{:<16} {:<22} {:<6} {:<9} {:<10} {:<10} {:<8} {:<7} UNITS",
        "HOST", "ROLES", "READY", "KUBELET", "KUBE-PROXY", "CONTAINERD", "ETCD", "PENDING"
    );
    for h in &s.hosts {
        let v = |c: &str| h.versions.get(c).cloned().unwrap_or_else(|| "-".into());
        let ready = match (h.reachable, h.ready) {
            (false, _) => "down",
            (_, Some(true)) => "yes",
            (_, Some(false)) => "no",
            (_, None) => "-",
        };
        let pending = h
            .pending_changes
            .as_ref()
            .map_or("-".to_string(), |c| c.len().to_string());
        let active = h.units.values().filter(|s| *s == "active").count();
        println!(
            "{:<16} {:<22} {:<6} {:<9} {:<10} {:<10} {:<8} {:<7} {active}/{} active",
            h.name,
            h.roles.join(","),
            ready,
            v("kubelet"),
            v("kube-proxy"),
            v("containerd"),
            v("etcd"),
            pending,
            h.units.len()
        );
    }
    if !s.etcd.is_empty() {
        let healthy = s.etcd.iter().filter(|m| m.healthy).count();
        let leader = s
            .etcd
            .iter()
            .find(|m| m.leader)
            .map_or("none".to_string(), |m| m.host.clone());
        println!(
            "\netcd: {healthy} of {} members healthy, leader {leader}",
            s.etcd.len()
        );
    }
    if !s.certificates.is_empty() {
        println!("\ncertificates, soonest to expire first:");
        for c in s.certificates.iter().take(5) {
            println!(
                "  {:<16} {:<26} {} ({})",
                c.host,
                c.certificate,
                c.expires,
                expiration::residual(c.residual_days)
            );
        }
    }
    if s.problems.is_empty() {
        println!("\nall is well");
    } else {
        println!("\nproblems:");
        for p in &s.problems {
            println!("  {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_change_both_dry_runs_saw_on_the_seed_is_pending_once() {
        let event = |host: &str, change: &str| {
            format!(
                r#"{{"event":"host","phase":"csr-approver","result":{{"host":"{host}","status":"ok","changes":["{change}"]}}}}"#
            )
        };
        let captured = [
            event("cp", "restart a.service"),
            event("w1", "restart a.service"),
            event("cp", "restart a.service"),
        ]
        .join("\n");
        let (changes, failed) = super::pending_by_host(&captured);
        assert_eq!(changes["cp"], ["csr-approver: restart a.service"]);
        assert_eq!(changes["w1"], ["csr-approver: restart a.service"]);
        assert!(failed.is_empty());
    }

    #[test]
    fn what_runs_is_one_line_per_component_then_the_units_states_in_their_order() {
        let units = [
            "kubelet.service".to_string(),
            "etcd.service".into(),
            "x.service".into(),
        ];
        let script = super::what_runs_script(&["kubelet", "etcd"], &units);
        assert!(
            script.contains("systemctl show -p MainPID --value kubelet etcd")
                && script.contains("systemctl is-active kubelet.service etcd.service x.service"),
            "{script}"
        );
        let (versions, states) = super::parse_what_runs(
            "version kubelet 1.37.2\nversion etcd etcd Version: 3.6.14\nunits active failed \n",
            &units,
        );
        assert_eq!(versions["kubelet"], "1.37.2");
        assert_eq!(versions["etcd"], "3.6.14");
        assert_eq!(states["kubelet.service"], "active");
        assert_eq!(states["etcd.service"], "failed");
        assert_eq!(states["x.service"], "unknown");
    }

    use super::*;

    #[test]
    fn versions_are_read_from_each_components_line() {
        assert_eq!(version_in("Kubernetes v1.37.2"), "1.37.2");
        assert_eq!(
            version_in("containerd github.com/containerd/containerd/v2 v2.3.4 0a1b2c"),
            "2.3.4"
        );
        assert_eq!(version_in("etcd Version: 3.6.14"), "3.6.14");
        assert_eq!(
            version_in("Running /usr/local/bin/kube-router version v2.1.0, built on , go1.26.8"),
            "2.1.0"
        );
        assert_eq!(version_in("-"), "-");
        assert_eq!(version_in(""), "-");
    }

    fn host(name: &str) -> HostStatus {
        HostStatus {
            name: name.into(),
            reachable: true,
            ready: Some(true),
            versions: [("kubelet", "1.37.2"), ("kube-proxy", "1.37.2")]
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .into(),
            units: [("kubelet.service".to_string(), "active".to_string())].into(),
            pending_changes: Some(vec![]),
            ..Default::default()
        }
    }

    #[test]
    fn problems_name_the_host_and_what_is_off() {
        let mut s = Status {
            api: "ok".into(),
            hosts: vec![host("cp1"), host("w1")],
            etcd: vec![EtcdMember {
                host: "cp1".into(),
                healthy: true,
                leader: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(problems_of(&s, "1.37.2"), Vec::<String>::new());
        s.hosts[1]
            .units
            .insert("kubelet.service".into(), "inactive".into());
        s.hosts[1].ready = Some(false);
        s.hosts[1].pending_changes =
            Some(vec!["kubelet: write /etc/kubernetes/kubelet.yaml".into()]);
        s.hosts[1]
            .versions
            .insert("kubelet".into(), "1.36.4".into());
        let p = problems_of(&s, "1.37.2");
        assert_eq!(
            p,
            [
                "w1: the Node is not Ready",
                "w1: kubelet.service is inactive (`journalctl -u kubelet.service` on the host)",
                "w1: kubelet is 1.36.4, the inventory says 1.37.2",
                "w1: 1 change pending (kubelet: write /etc/kubernetes/kubelet.yaml)",
            ]
        );
        s.etcd[0].leader = false;
        assert!(
            problems_of(&s, "1.37.2")
                .contains(&"etcd has no leader among the control planes".to_string())
        );
    }
}
