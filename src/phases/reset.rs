//! `provision reset`: take hosts out of Kubernetes. Hosts that leave a cluster that stays are
//! drained first, lose their etcd member, and their Node is deleted last (kubeadm's order:
//! drain, reset the host, delete the node). Every reset host loses what provision put there:
//! units stopped, disabled and removed; pods, their mounts and network namespaces; the overlay
//! and CNI links and the packet-filter rules of kube-proxy and the CNI; configuration, state,
//! certificates and the bundle's files. Audit logs under /var/log/kubernetes stay, as they
//! do with kubeadm. Everything is an action, so a dry run lists it and a second run changes
//! nothing.

use super::step::{self, Applied, Desired, Pure, Step};
use super::{Phase, Work, control_plane, etcd, host, kubelet};
use crate::bundle;
use crate::cluster::{Cluster, Host};
use crate::cni::{self, Cni};
use crate::host::Leftovers;
use crate::host::probe::Observed;
use crate::host::{Action, UnitSpec};
use crate::paths;
use crate::run::Ctx;
use crate::runtime::{self, Runtime};
use crate::ssh::shell_quote;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};

/// How long evicted pods may take to go (their grace periods included).
const DRAIN_WAIT: Duration = Duration::from_secs(180);

/// The reset phases. `cluster_stays`: the hosts leave a cluster that goes on (drain, etcd
/// member, Node); otherwise the whole cluster goes.
pub fn tree(cluster_stays: bool) -> Vec<Phase> {
    vec![
        Phase::leaf(
            "drain",
            "cordon each leaving node and evict its pods (when the cluster stays)",
            Work::Step(Box::new(Drain { cluster_stays })),
        ),
        Phase::leaf(
            "remove-etcd-member",
            "take a leaving control plane's member out of etcd (when the cluster stays)",
            Work::Step(Box::new(RemoveEtcdMember { cluster_stays })),
        ),
        Phase::leaf(
            "local-kubeconfig",
            "remove the operator's admin kubeconfig of this cluster (when the cluster goes)",
            Work::Step(Box::new(ForgetKubeconfig { cluster_stays })),
        ),
        Phase::leaf(
            "cleanup",
            "stop and remove everything provision installed on the host",
            Work::Step(Box::new(Pure(cleanup))),
        ),
        Phase::leaf(
            "delete-node",
            "delete each leaving node's Node object (when the cluster stays)",
            Work::Step(Box::new(DeleteNode { cluster_stays })),
        ),
    ]
}

/// Units provision writes, stopped in this order: the kubelet first (it would restart pods),
/// then the control plane; etcd, the networks' and the runtimes' units last (pods are removed
/// through the runtime).
const NODE_UNITS: [&str; 2] = ["kubelet", "kube-proxy"];

/// kube-proxy's own leftovers: its IPVS dummy link and its chains (the kubelet's share the
/// prefix).
const KUBE_PROXY_LINK: &str = "kube-ipvs0";
const KUBE_CHAINS: &str = "KUBE-";

fn stopped(unit: &str) -> Action {
    Action::Unit(UnitSpec {
        name: format!("{unit}.service"),
        enabled: false,
        active: false,
        restart_when_changed: Vec::new(),
    })
}

fn exec(label: &str, functions: &str, cmd: &str, unless: &str) -> Action {
    Action::Exec {
        label: label.into(),
        cmd: format!("{functions}\n{cmd}"),
        unless: format!("{functions}\n{unless}"),
    }
}

/// What a reset host must lose, in order: what every network and runtime provision knows left
/// behind, whichever the cluster runs (a host may have run another before).
pub fn cleanup(_: &Cluster, _: &Host) -> Vec<Action> {
    cleanup_of(&cni::ALL, &runtime::ALL)
}

/// Everything the leftovers of `networks` and `runtimes` hold, and what provision itself writes.
fn leftovers_of(networks: &[&dyn Cni], runtimes: &[&dyn Runtime]) -> Leftovers {
    let mut all = Leftovers::default();
    let parts = networks
        .iter()
        .map(|c| c.leftovers())
        .chain(runtimes.iter().map(|r| r.leftovers()));
    for l in parts {
        for (to, from) in [
            (&mut all.units, l.units),
            (&mut all.paths, l.paths),
            (&mut all.links, l.links),
            (&mut all.chains, l.chains),
            (&mut all.mounts, l.mounts),
        ] {
            for item in from {
                if !to.contains(&item) {
                    to.push(item);
                }
            }
        }
    }
    all
}

/// The cleanup of a host, given the networks and runtimes whose leftovers it removes.
pub fn cleanup_of(networks: &[&dyn Cni], runtimes: &[&dyn Runtime]) -> Vec<Action> {
    let left = leftovers_of(networks, runtimes);
    let mut actions: Vec<Action> = NODE_UNITS
        .iter()
        .chain(control_plane::COMPONENTS.iter())
        .map(|u| stopped(u))
        .collect();
    actions.push(exec(
        "remove the pods and their containers",
        "",
        "if command -v crictl >/dev/null 2>&1; then timeout 120 crictl rmp -fa >/dev/null 2>&1 || true; fi\n\
         systemctl stop kubepods.slice 2>/dev/null || true",
        "! systemctl is-active -q kubepods.slice && \
         { ! command -v crictl >/dev/null 2>&1 || [ -z \"$(timeout 10 crictl pods -q 2>/dev/null)\" ]; }",
    ));
    // etcd, then the networks' units, then the runtimes' (their order in `left`)
    actions.push(stopped("etcd"));
    actions.extend(left.units.iter().map(|u| stopped(u)));
    let procs = format!(
        "left() {{ for d in /proc/[0-9]*; do case \"$(readlink \"$d/exe\" 2>/dev/null)\" in {}/*) echo \"${{d#/proc/}}\";; esac; done; }}",
        bundle::HOST_ROOT
    );
    actions.push(exec(
        "stop processes still running from the bundle (container shims)",
        &procs,
        "left | xargs -r kill -9; sleep 1",
        "[ -z \"$(left)\" ]",
    ));
    // below the state directories only: a disk mounted at /var/lib/etcd or
    // /var/lib/containerd itself is the operator's and stays (it is emptied, not removed)
    let mut under = vec![kubelet::STATE_DIR.to_string()];
    under.extend(left.mounts.iter().cloned());
    actions.push(exec(
        "unmount the pods' volumes, root filesystems and network namespaces",
        &format!(
            "mounts() {{ findmnt -rn -o TARGET | grep -E '^({})/|^/run/netns/cni-'; }}",
            under.join("|")
        ),
        "mounts | sort -r | while read -r m; do umount \"$m\" 2>/dev/null || umount -l \"$m\"; done; rm -f /run/netns/cni-*",
        "[ -z \"$(mounts)\" ] && ! ls /run/netns/cni-* >/dev/null 2>&1",
    ));
    let mut links = left.links.clone();
    links.push(KUBE_PROXY_LINK.into());
    let rules = rule_pattern(&left.chains);
    let net = format!(
        "links() {{ for l in {links}; do ip link show \"$l\" >/dev/null 2>&1 && echo \"$l\"; done; }}\n\
         rules() {{ {{ iptables-save; ip6tables-save; }} 2>/dev/null | grep -E '{rules}'; }}\n\
         nft_tables() {{ nft list tables 2>/dev/null | grep -E ' kube-proxy$'; }}",
        links = links.join(" "),
    );
    actions.push(exec(
        "remove the pod network's links and the rules of kube-proxy and the CNI",
        &net,
        &format!(
            "links | while read -r l; do ip link delete \"$l\"; done\n\
             for t in iptables ip6tables; do\n\
               command -v $t-save >/dev/null 2>&1 || continue\n\
               if $t-save | grep -qE '{rules}'; then $t-save | grep -vE '{rules}' | $t-restore; fi\n\
             done\n\
             nft_tables | while read -r _ family name; do nft delete table \"$family\" \"$name\"; done\n\
             true"
        ),
        "[ -z \"$(links)\" ] && [ -z \"$(rules)\" ] && [ -z \"$(nft_tables)\" ]",
    ));
    actions.push(exec(
        "remove the links into the bundle's directory",
        &format!(
            "links() {{ find /usr/local/bin /opt/cni/bin /opt -maxdepth 1 -type l -lname '{}/*' 2>/dev/null; }}",
            bundle::HOST_ROOT
        ),
        "links | xargs -r rm -f",
        "[ -z \"$(links)\" ]",
    ));
    actions.extend(owned_paths(&left).iter().map(|p| Action::absent(p)));
    actions
}

/// The lines of `iptables-save` that belong to Kubernetes: kube-proxy's and the networks'
/// chains (`chains`, prefixes), the rules in them and those that jump to them, and provision's
/// own commented rules.
fn rule_pattern(chains: &[String]) -> String {
    let mut prefixes = vec![KUBE_CHAINS.to_string()];
    prefixes.extend(chains.iter().cloned());
    let c = prefixes.join("|");
    format!("^:({c})|^-A ({c})| -[jg] ({c})|provision-(masquerade|forward)")
}

/// Files and directories provision writes on a host, with the networks' and runtimes'.
fn owned_paths(left: &Leftovers) -> Vec<String> {
    let mut paths: Vec<String> = [
        paths::KUBERNETES_DIR,
        kubelet::STATE_DIR,
        "/var/lib/kube-proxy",
        etcd::DATA_DIR,
        runtime::CRICTL_CONFIG,
        "/var/lib/cni",
        "/usr/local/lib/provision",
        "/var/lib/provision",
        bundle::HOST_ROOT,
        host::SYSCTL_FILE,
        host::MODULES_FILE,
        kubelet::UNIT,
        kubelet::PROXY_UNIT,
        etcd::UNIT,
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.extend(left.paths.iter().cloned());
    paths.extend(
        control_plane::COMPONENTS
            .iter()
            .map(|c| format!("/etc/systemd/system/{c}.service")),
    );
    paths
}

/// Cordons the node and evicts its pods (DaemonSet and static pods stay: they go with the host).
struct Drain {
    cluster_stays: bool,
}

/// The pods a drain evicts from `node` (those already terminating included: it waits for them).
async fn pods_to_evict(pods: &Api<Pod>, node: &str) -> Result<Vec<Pod>, String> {
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| format!("listing the pods on {node}: {e}"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| {
            let daemon = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DaemonSet");
            let mirror = p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
            !daemon && !mirror
        })
        .collect())
}

fn namespace_terminating(s: &kube::core::Status) -> bool {
    s.code == 403
        && s.details
            .iter()
            .flat_map(|d| d.causes.iter())
            .any(|c| c.reason == "NamespaceTerminating")
}

fn pod_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

fn api_error(node: &str, e: impl std::fmt::Display) -> String {
    format!(
        "cannot drain {node} through the API: {e}\nto reset the host without the API, re-run with --skip-phases drain,delete-node"
    )
}

/// The API client and the host's Node, or None (with a note) when it is not a node.
async fn leaving_node(
    ctx: &Ctx,
    host: &Host,
    after: &mut step::After,
) -> Result<Option<(kube::Client, Node)>, String> {
    let client = crate::api::client(ctx, "admin").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes
        .get_opt(&host.name)
        .await
        .map_err(|e| api_error(&host.name, e))?
    {
        Some(node) => Ok(Some((client, node))),
        None => {
            after
                .notes
                .push(format!("{} is not a node of the cluster", host.name));
            Ok(None)
        }
    }
}

#[async_trait::async_trait]
impl Step for Drain {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, _: &Host) -> bool {
        self.cluster_stays
    }

    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        let Some((client, _)) = leaving_node(ctx, host, &mut after).await? else {
            return Ok(after);
        };
        let pods = pods_to_evict(&Api::all(client), &host.name).await?;
        after.changes.push(format!(
            "would cordon {} and evict {} pod(s): {}",
            host.name,
            pods.len(),
            pods.iter().map(pod_name).collect::<Vec<_>>().join(", ")
        ));
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        let Some((client, node)) = leaving_node(ctx, host, &mut after).await? else {
            return Ok(after);
        };
        let nodes: Api<Node> = Api::all(client.clone());
        if !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
        {
            let patch = serde_json::json!({"spec": {"unschedulable": true}});
            nodes
                .patch(&host.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&host.name, e))?;
            after.changes.push(format!("cordon {}", host.name));
        }
        let pods: Api<Pod> = Api::all(client.clone());
        let started = Instant::now();
        let mut evicted = std::collections::BTreeSet::new();
        loop {
            let left = pods_to_evict(&pods, &host.name).await?;
            if left.is_empty() {
                break;
            }
            let mut refused = Vec::new();
            for p in left
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) else {
                    continue;
                };
                let in_ns: Api<Pod> = Api::namespaced(client.clone(), ns);
                match in_ns.evict(name, &EvictParams::default()).await {
                    Ok(_) => {
                        evicted.insert(pod_name(p));
                    }
                    // a PodDisruptionBudget says not now: try again until the wait ends
                    Err(kube::Error::Api(s)) if s.code == 429 => refused.push(pod_name(p)),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    // its namespace is being deleted (no eviction can be created there): the
                    // pod goes with it anyway, so delete it now rather than wait for the
                    // namespace controller
                    Err(kube::Error::Api(s)) if namespace_terminating(&s) => {
                        match in_ns.delete(name, &DeleteParams::default()).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 404 => {}
                            Err(e) => return Err(api_error(&host.name, e)),
                        }
                    }
                    Err(e) => return Err(api_error(&host.name, e)),
                }
            }
            if started.elapsed() > DRAIN_WAIT {
                let names: Vec<String> = left.iter().map(pod_name).collect();
                return Err(format!(
                    "{} still has pods after {} s: {}{}\n{} stays cordoned; see `kubectl describe pod` for each, then run the same command again",
                    host.name,
                    DRAIN_WAIT.as_secs(),
                    names.join(", "),
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (evicting {} is refused by a PodDisruptionBudget)",
                            refused.join(", ")
                        )
                    },
                    host.name
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if !evicted.is_empty() {
            after.changes.push(format!(
                "evict {} pod(s) from {}: {}",
                evicted.len(),
                host.name,
                evicted.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(after)
    }
}

/// A leaving control plane's etcd member is removed through the first control plane's etcd
/// (which never leaves alone), with the leaving host's own healthcheck-client certificate.
struct RemoveEtcdMember {
    cluster_stays: bool,
}

#[async_trait::async_trait]
impl Step for RemoveEtcdMember {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, host: &Host) -> bool {
        self.cluster_stays && host.control_plane
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        _: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        let first = cluster.first_control_plane().ok_or("no control plane")?;
        let at = etcd::url(&first.address, 2379);
        let name = shell_quote(&host.name);
        let list = etcd::etcdctl_at(&at, "member list");
        Ok(vec![Action::Exec {
            label: format!("remove etcd member {}", host.name),
            cmd: format!(
                "id=$({list} | awk -F', ' -v n={name} '$3 == n {{print $1}}'); [ -z \"$id\" ] || {}",
                etcd::etcdctl_at(&at, "member remove \"$id\"")
            ),
            // without its client certificate the host was cleaned up already, which happens only
            // after the member was removed; a failing list is not "done"
            unless: format!(
                "[ ! -f {key} ] || {{ out=$({list}) && ! printf '%s\\n' \"$out\" | grep -qF {member}; }}",
                key = etcd::HEALTHCHECK_KEY,
                member = shell_quote(&format!(", {}, ", host.name)),
            ),
        }]
        .into())
    }
}

/// When the whole cluster goes, the admin kubeconfig written beside the inventory goes too, if
/// it belongs to this cluster (same CA); a file of another cluster is left alone.
struct ForgetKubeconfig {
    cluster_stays: bool,
}

impl ForgetKubeconfig {
    /// The local kubeconfig, when it is this cluster's.
    async fn ours(&self, ctx: &Ctx) -> Result<Option<std::path::PathBuf>, String> {
        let Some(path) = &ctx.options.local_kubeconfig else {
            return Ok(None);
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let ca_path = paths::CA_CERT.to_string();
        let (_, files) = ctx.read_first(std::slice::from_ref(&ca_path)).await?;
        let Some(ca) = files.get(&ca_path) else {
            return Ok(None);
        };
        let ours = crate::pki::kubeconfig::parse(&text)
            .is_ok_and(|k| k.ca_pem.trim() == String::from_utf8_lossy(ca).trim());
        Ok(ours.then(|| path.clone()))
    }
}

#[async_trait::async_trait]
impl Step for ForgetKubeconfig {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        !self.cluster_stays && cluster.is_first_control_plane(host)
    }

    async fn dry_run(
        &self,
        ctx: &Ctx,
        _: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        if let Some(p) = self.ours(ctx).await? {
            after.changes.push(format!("would remove {}", p.display()));
        }
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        _: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        if let Some(p) = self.ours(ctx).await? {
            std::fs::remove_file(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
            after.changes.push(format!("remove {}", p.display()));
        }
        Ok(after)
    }
}

/// The leaving node's Node object, deleted once the host no longer runs a kubelet.
struct DeleteNode {
    cluster_stays: bool,
}

#[async_trait::async_trait]
impl Step for DeleteNode {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, _: &Host) -> bool {
        self.cluster_stays
    }

    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let nodes: Api<Node> = Api::all(crate::api::client(ctx, "admin").await?);
        let mut after = step::After::default();
        if nodes
            .get_opt(&host.name)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            after
                .changes
                .push(format!("would delete Node {}", host.name));
        }
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let nodes: Api<Node> = Api::all(crate::api::client(ctx, "admin").await?);
        let mut after = step::After::default();
        match nodes.delete(&host.name, &DeleteParams::default()).await {
            Ok(_) => after.changes.push(format!("delete Node {}", host.name)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("deleting Node {}: {e}", host.name)),
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_stops_before_its_file_goes_and_the_runtime_outlives_the_pods() {
        let text = "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: n1, address: 10.0.0.1, roles: [control-plane]}\n";
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.yaml");
        std::fs::write(&p, text).unwrap();
        let (cluster, _) = crate::cluster::resolve(&crate::inventory::load(&p).unwrap()).unwrap();
        let actions = cleanup(&cluster, &cluster.hosts[0]);
        let at = |subject: &str| {
            actions
                .iter()
                .position(|a| a.subject() == subject)
                .unwrap_or_else(|| panic!("no action for {subject}"))
        };
        let pods = at("remove the pods and their containers");
        assert!(at("kubelet.service") < pods);
        assert!(pods < at("containerd.service"));
        for unit in NODE_UNITS
            .iter()
            .chain(control_plane::COMPONENTS.iter())
            .chain(["etcd", "provision-pod-routes", "containerd", "crio"].iter())
        {
            let file = format!("/etc/systemd/system/{unit}.service");
            assert!(at(&format!("{unit}.service")) < at(&file), "{unit}");
        }
        // mounts go before the directories that hold them
        let unmount = at("unmount the pods' volumes, root filesystems and network namespaces");
        assert!(unmount < at("/var/lib/kubelet") && unmount < at("/run/containerd"));
    }

    /// The pattern goes to `grep -E` on the host: checked with grep itself.
    #[test]
    fn rule_filter_takes_kubernetes_lines_and_keeps_the_rest() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:DOCKER - [0:0]\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A PREROUTING -j DOCKER\n-A KUBE-SERVICES -j KUBE-MARK-MASQ\n\
            -A POSTROUTING -s 10.88.0.0/16 ! -d 10.88.0.0/16 -m comment --comment provision-masquerade -j MASQUERADE\n\
            -A CNI-HOSTPORT-DNAT -j DNAT\n-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE\nCOMMIT";
        let mut grep = std::process::Command::new("grep")
            .args([
                "-vE",
                &rule_pattern(&leftovers_of(&cni::ALL, &runtime::ALL).chains),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        grep.stdin
            .take()
            .unwrap()
            .write_all(save.as_bytes())
            .unwrap();
        let out = grep.wait_with_output().unwrap();
        let kept = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            kept.lines().collect::<Vec<_>>(),
            [
                "*nat",
                ":PREROUTING ACCEPT [0:0]",
                ":DOCKER - [0:0]",
                "-A PREROUTING -j DOCKER",
                "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
                "COMMIT"
            ]
        );
    }
}
