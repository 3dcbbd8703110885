//! `provision etcd snapshot restore`: the cluster's state put back to a snapshot's. On every
//! control plane: the API server and its companions stopped, then etcd; the snapshot restored
//! into a new data directory with the inventory's member list (the old one kept beside it until
//! the cluster is back); etcd started on all members together (they need each other for a
//! quorum), then the control plane. Nodes and their pods come back by themselves: the kubelets
//! reconnect.

use super::{Provenance, ca_sha256, provenance_path, sha256_path};
use crate::cluster::Host;
use crate::paths::kubeconfig;
use crate::phases::control_plane::COMPONENTS;
use crate::phases::etcd::{DATA_DIR, etcdctl, url};
use crate::run::Ctx;
use crate::ssh::shell_quote;
use crate::systemd;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Where the snapshot is copied to on each control plane.
const HOST_COPY: &str = "/var/lib/provision/etcd-restore/snapshot.db";
/// When the control plane was started again (the host's clock, seconds).
const STARTED: &str = "/var/lib/provision/etcd-restore/started";

/// What the operator allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consent {
    /// Restore although members are healthy (what was written since the snapshot is lost), or
    /// a snapshot without its provenance.
    pub force: bool,
    pub dry_run: bool,
}

/// The snapshot at `path`, checked: its sha256 against the files beside it, its cluster against
/// this one's CA. Returns its provenance.
pub async fn check(ctx: &Ctx, path: &Path, force: bool) -> Result<Provenance, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let sums = sha256_path(path);
    match std::fs::read_to_string(&sums) {
        Ok(line) if line.split_whitespace().next() == Some(sha.as_str()) => {}
        Ok(_) => {
            return Err(format!(
                "{shown} does not match its sha256 in {} (truncated or changed): nothing was changed",
                sums.display()
            ));
        }
        Err(_) if force => {}
        Err(e) => {
            return Err(format!(
                "{} cannot be read ({e}): without it a truncated snapshot cannot be told apart; pass --force to restore anyway",
                sums.display()
            ));
        }
    }
    let ca = ctx.ca(crate::pki::CaKind::Kubernetes, false).await?;
    let ours = ca_sha256(&ca.cert_pem);
    let provenance_file = provenance_path(path);
    let provenance: Provenance = match std::fs::read_to_string(&provenance_file)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) if force => Provenance {
            cluster: format!("unknown ({e})"),
            ca_sha256: ours.clone(),
            sha256: sha.clone(),
            taken_from: "unknown".into(),
            taken_at: "unknown".into(),
            status: super::SnapshotStatus {
                hash: 0,
                revision: 0,
                total_keys: 0,
                total_size: bytes.len() as u64,
                version: String::new(),
            },
        },
        Err(e) => {
            return Err(format!(
                "{} cannot be read ({e}): which cluster the snapshot is of cannot be told; pass --force to restore anyway",
                provenance_file.display()
            ));
        }
    };
    if provenance.ca_sha256 != ours {
        return Err(format!(
            "{shown} is a snapshot of another cluster ({}: another CA than {}'s): nothing was changed",
            provenance.cluster, ctx.cluster.name
        ));
    }
    if provenance.sha256 != sha {
        return Err(format!(
            "{shown} is not the snapshot {} describes (another sha256): nothing was changed",
            provenance_file.display()
        ));
    }
    Ok(provenance)
}

/// Which hosts a restore acts on: etcd's members (they become the restored cluster's), and the
/// nodes whose agents restart where they run (kube-system's Deployments and DaemonSets restart
/// too: their pods watched revisions the snapshot lacks).
pub struct Targets<'a> {
    pub members: Vec<&'a Host>,
    pub nodes: Vec<&'a Host>,
    /// Wait until kube-system's workloads rolled out again. Not when the nodes come back
    /// later (a restore from a backup): a rollout would wait for absent nodes.
    pub wait_for_workloads: bool,
}

impl<'a> Targets<'a> {
    /// A running cluster's: every control plane and every node of the inventory.
    pub fn whole(cluster: &'a crate::cluster::Cluster) -> Targets<'a> {
        Targets {
            members: cluster.control_planes().collect(),
            nodes: cluster.hosts.iter().collect(),
            wait_for_workloads: true,
        }
    }
}

/// The steps of a restore, as the user reads them.
pub fn plan(ctx: &Ctx, path: &Path, p: &Provenance, stamp: &str, t: &Targets) -> Vec<String> {
    let cps: Vec<&str> = t.members.iter().map(|h| h.name.as_str()).collect();
    let on = cps.join(", ");
    vec![
        format!(
            "restore etcd from {} (revision {}, {} keys, taken {} from {})",
            path.display(),
            p.status.revision,
            p.status.total_keys,
            p.taken_at,
            p.taken_from
        ),
        format!("copy the snapshot to {on} and check it there (sha256, etcdutl)"),
        format!("stop {} on {on}", COMPONENTS.join(", ")),
        format!("stop etcd on {on}"),
        format!(
            "restore it into a new data directory on {on} (members {}); the old one is kept as {DATA_DIR}/member.before-restore-{stamp} until the cluster is back",
            member_list(&t.members)
        ),
        format!("start etcd on {on} and wait until every member is healthy"),
        format!(
            "start {} on {on} and wait for /readyz",
            COMPONENTS.join(", ")
        ),
        "remove the Nodes of control planes the inventory does not name (a restore onto other machines), and their addresses from the `kubernetes` Service".into(),
        format!(
            "restart {} where they run on {}, and kube-system's Deployments and DaemonSets (they watched later revisions than the snapshot's){}",
            node_agents(&ctx.cluster).join(", "),
            t.nodes
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if t.wait_for_workloads {
                ", and wait for their rollout"
            } else {
                ""
            }
        ),
        "wait until the controller manager and the scheduler lead again".into(),
        format!("remove {DATA_DIR}/member.before-restore-{stamp}"),
    ]
}

/// `cp1=https://10.0.0.1:2380,cp2=...`: the members of the restored cluster.
fn member_list(members: &[&Host]) -> String {
    members
        .iter()
        .map(|h| format!("{}={}", h.name, url(&h.address, 2380)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Names the healthy members: a restore over a healthy cluster needs `--force`.
/// The units on every node that watch the API: the kubelet, kube-proxy and, where it runs,
/// the policy engine (with a stale view it would judge new pods by what it last saw).
fn node_agents(cluster: &crate::cluster::Cluster) -> Vec<&'static str> {
    let mut units = vec!["kubelet", "kube-proxy"];
    if crate::cni::policy_engine::enabled(cluster) {
        units.push(crate::cni::policy_engine::SERVICE);
    }
    units
}

pub async fn healthy_members(ctx: &Ctx) -> Vec<String> {
    let mut healthy = Vec::new();
    for h in ctx.cluster.control_planes() {
        if let Ok(s) = ctx.session(h).await
            && s.run(&etcdctl("endpoint health")).await.is_ok()
        {
            healthy.push(h.name.clone());
        }
    }
    healthy
}

/// Runs the restore; returns the lines that say what was done.
pub async fn run(
    ctx: &Ctx,
    path: &Path,
    p: &Provenance,
    stamp: &str,
    t: &Targets<'_>,
) -> Result<Vec<String>, String> {
    let cps: Vec<&Host> = t.members.clone();
    let mut done = Vec::new();
    // copy and check before anything stops: a bad copy changes nothing
    let q = shell_quote(HOST_COPY);
    for h in &cps {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        let sent = session
            .run_with_file(
                &format!(
                    "set -e; umask 077; mkdir -p $(dirname {q}); cat > {q}.part; mv {q}.part {q}; etcdutl snapshot status {q} -w json >/dev/null"
                ),
                path,
            )
            .await
            .map_err(|e| format!("{}: the snapshot copy failed its check: {e}", h.name))?;
        if sent != p.sha256 {
            return Err(format!(
                "{}: the copy is not the snapshot (sha256 {sent}): nothing was stopped",
                h.name
            ));
        }
    }
    done.push(format!(
        "copied the snapshot to every control plane and checked it ({})",
        p.sha256
    ));
    let units: Vec<String> = COMPONENTS
        .iter()
        .rev()
        .map(|c| format!("{c}.service"))
        .collect();
    on_all(ctx, &cps, &systemd::stop(&units.join(" "))).await?;
    on_all(ctx, &cps, &systemd::stop("etcd.service")).await?;
    done.push("stopped the API servers and etcd".into());
    let token = format!("provision-restore-{stamp}");
    let restored = format!("{DATA_DIR}/.restore-{stamp}");
    let kept = format!("{DATA_DIR}/member.before-restore-{stamp}");
    for h in &cps {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        let peer = url(&h.address, 2380);
        let script = format!(
            "set -e\n\
             rm -rf {restored}\n\
             etcdutl snapshot restore {q} --name {name} --initial-cluster {members} --initial-cluster-token {token} --initial-advertise-peer-urls {peer} --data-dir {restored} >/dev/null\n\
             if [ -d {DATA_DIR}/member ]; then mv {DATA_DIR}/member {kept}; fi\n\
             mv {restored}/member {DATA_DIR}/member\n\
             rm -rf {restored}\n\
             chmod 0700 {DATA_DIR} {DATA_DIR}/member",
            name = shell_quote(&h.name),
            members = shell_quote(&member_list(&cps)),
        );
        session
            .run(&script)
            .await
            .map_err(|e| format!("{}: the restore failed: {e} (etcd and the API server are stopped; run the restore again)", h.name))?;
    }
    done.push(format!(
        "restored the data directory on every control plane (the old one kept as {kept})"
    ));
    // all members at once: each waits for the others to form a quorum
    on_all(ctx, &cps, "systemctl start --no-block etcd.service").await?;
    let health = etcdctl("endpoint health");
    for h in &cps {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        let wait = systemd::wait_for(&format!("{health} >/dev/null 2>&1"), 120, 0.5);
        systemd::wait_or_journal(&session, &wait, Some(&health), "etcd", 15)
            .await
            .map_err(|why| {
                format!(
                    "{}: etcd is not healthy after the restore:\n{why}the old data is in {kept}",
                    h.name
                )
            })?;
    }
    done.push("etcd is healthy on every member".into());
    let start: Vec<String> = units.iter().rev().cloned().collect();
    // the hosts' own clock marks the start: the leader leases must be renewed after it
    on_all(
        ctx,
        &cps,
        &format!("date +%s > {STARTED}; systemctl start {}", start.join(" ")),
    )
    .await?;
    let kubectl = format!(
        "kubectl --kubeconfig={} --request-timeout=5s",
        kubeconfig("admin")
    );
    for h in &cps {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        let wait = systemd::wait_for(
            &format!("{kubectl} get --raw=/readyz >/dev/null 2>&1"),
            120,
            1.0,
        );
        systemd::wait_or_journal(&session, &wait, None, "kube-apiserver", 15)
            .await
            .map_err(|why| {
                format!(
                    "{}: the API server is not ready after the restore:\n{why}",
                    h.name
                )
            })?;
    }
    done.push("the API servers are ready".into());
    let first = *cps.first().ok_or("no control plane")?;
    done.extend(forget_departed(ctx, first, &cps).await?);
    // every watcher of the API saw later revisions than the snapshot's and would wait for them:
    // the node agents restart, and so do the cluster's own pods that watch (CoreDNS, a CNI's)
    done.extend(restart_agents(ctx, &t.nodes).await);
    let session = ctx.session(first).await.map_err(|e| e.to_string())?;
    let restart = format!(
        "set -e; for kind in deployment daemonset; do for r in $({kubectl} -n kube-system get $kind -o name); do {kubectl} -n kube-system rollout restart $r >/dev/null; done; done"
    );
    session
        .run(&restart)
        .await
        .map_err(|e| format!("{}: restarting kube-system's workloads: {e}", first.name))?;
    if t.wait_for_workloads {
        // rollout status watches: without the 5 s request limit
        let watch = format!("kubectl --kubeconfig={}", kubeconfig("admin"));
        session
            .run(&format!(
                "set -e; for kind in deployment daemonset; do for r in $({kubectl} -n kube-system get $kind -o name); do {watch} -n kube-system rollout status $r --timeout=180s >/dev/null; done; done"
            ))
            .await
            .map_err(|e| format!("{}: kube-system's workloads rolling out again: {e}", first.name))?;
        done.push("restarted kube-system's Deployments and DaemonSets, and they rolled out".into());
    } else {
        done.push("restarted kube-system's Deployments and DaemonSets: their pods start as nodes come back".into());
    }
    // the controller manager and the scheduler take their leases over once the snapshot's
    // holders expire: the cluster schedules again from then on
    let renewed = format!(
        "for l in kube-controller-manager kube-scheduler; do t=$({kubectl} -n kube-system get lease $l -o jsonpath='{{.spec.renewTime}}'); [ -n \"$t\" ] && [ $(date -d \"$t\" +%s) -ge $(cat {STARTED}) ] || exit 1; done"
    );
    let wait = systemd::wait_for(&format!("( {renewed} )"), 90, 1.0);
    systemd::wait_or_journal(&session, &wait, None, "kube-controller-manager", 15)
        .await
        .map_err(|why| format!("{}: the controller manager and the scheduler did not lead again within 90 s:\n{why}", first.name))?;
    done.push("the controller manager and the scheduler lead again".into());
    on_all(ctx, &cps, &format!("rm -rf {kept} {q} {STARTED}")).await?;
    done.push(format!("removed {kept}"));
    Ok(done)
}

/// What the snapshot knew of control planes the inventory no longer names (a restore onto
/// other machines or addresses): their Nodes are deleted (their pods go with them), and their
/// API-server leases in etcd, so that the `kubernetes` Service lists only the members' API
/// servers once the API servers reconcile it (every 10 s). Other Nodes the inventory does not
/// name are only reported: a worker may come back by `join`.
async fn forget_departed(
    ctx: &Ctx,
    first: &Host,
    members: &[&Host],
) -> Result<Vec<String>, String> {
    let names: Vec<&str> = ctx.cluster.hosts.iter().map(|h| h.name.as_str()).collect();
    let mut addresses: Vec<&str> = members.iter().map(|h| h.address.as_str()).collect();
    addresses.sort_unstable();
    let kubectl = format!(
        "kubectl --kubeconfig={} --request-timeout=5s",
        kubeconfig("admin")
    );
    let leases = "/registry/masterleases/";
    let script = format!(
        "set -e\n\
         keep=' {names} '; addresses=' {addrs} '\n\
         for n in $({kubectl} get nodes -o name -l {role}); do\n\
           case \"$keep\" in *\" ${{n#node/}} \"*) ;; *) {kubectl} delete \"$n\" --wait=false >/dev/null; echo \"node ${{n#node/}}\";; esac\n\
         done\n\
         for n in $({kubectl} get nodes -o name -l '!{role}'); do\n\
           case \"$keep\" in *\" ${{n#node/}} \"*) ;; *) echo \"other ${{n#node/}}\";; esac\n\
         done\n\
         for k in $({get}); do\n\
           a=${{k#{leases}}}\n\
           case \"$addresses\" in *\" $a \"*) ;; *) {del} \"$k\" >/dev/null; echo \"lease $a\";; esac\n\
         done",
        names = names.join(" "),
        role = crate::phases::kubelet::CONTROL_PLANE_ROLE,
        addrs = addresses.join(" "),
        get = etcdctl(&format!("get --prefix --keys-only {leases}")),
        del = etcdctl("del"),
    );
    let session = ctx.session(first).await.map_err(|e| e.to_string())?;
    let said = session.run(&script).await.map_err(|e| {
        format!(
            "{}: removing what the snapshot knew of other control planes: {e}",
            first.name
        )
    })?;
    let mut done = Vec::new();
    let mut others = Vec::new();
    for line in said.lines() {
        match line.split_once(' ') {
            Some(("node", n)) => done.push(format!(
                "deleted Node {n}: a control plane of the snapshot the inventory does not name"
            )),
            Some(("lease", a)) => done.push(format!(
                "took {a} out of the `kubernetes` Service: no control plane of the inventory has that address"
            )),
            Some(("other", n)) => others.push(n.to_string()),
            _ => {}
        }
    }
    if !others.is_empty() {
        done.push(format!(
            "Nodes the inventory does not name: {} (`provision join` with them in the inventory brings them back; `kubectl delete node NAME` for those that are gone)",
            others.join(", ")
        ));
    }
    // the API servers rewrite the Service's endpoints from the leases every 10 s
    let wanted = addresses.join(" ");
    let listed = format!(
        "[ \"$({kubectl} -n default get endpointslice -l kubernetes.io/service-name=kubernetes -o jsonpath='{{.items[*].endpoints[*].addresses[*]}}' | tr ' ' '\\n' | LC_ALL=C sort | tr '\\n' ' ' | sed 's/ $//')\" = '{wanted}' ]"
    );
    let wait = systemd::wait_for(&listed, 60, 1.0);
    systemd::wait_or_journal(&session, &wait, None, "kube-apiserver", 10)
        .await
        .map_err(|why| {
            format!(
                "{}: the `kubernetes` Service does not list exactly the control planes' addresses ({wanted}) within 60 s:\n{why}",
                first.name
            )
        })?;
    Ok(done)
}

/// Restarts the node agents that run on each of `nodes`, all at once: their watches saw later
/// revisions than the snapshot's. A node not reached is named, not an error: the restore is
/// done, and its agents need the same restart once it is back.
async fn restart_agents(ctx: &Ctx, nodes: &[&Host]) -> Vec<String> {
    let agents = node_agents(&ctx.cluster);
    let script = format!(
        "for u in {}; do if systemctl is-active -q $u; then systemctl restart $u; echo $u; fi; done",
        agents.join(" ")
    );
    let results = futures::future::join_all(nodes.iter().map(|h| async {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        session.run(&script).await.map_err(|e| e.to_string())
    }))
    .await;
    nodes
        .iter()
        .zip(results)
        .map(|(h, r)| match r {
            Ok(said) if said.trim().is_empty() => format!("{}: no node agent runs there", h.name),
            Ok(said) => format!(
                "{}: restarted {}",
                h.name,
                said.split_whitespace().collect::<Vec<_>>().join(", ")
            ),
            Err(e) => format!(
                "{}: not reached ({e}): restart {} there once it is back",
                h.name,
                agents.join(", ")
            ),
        })
        .collect()
}

/// Runs `script` on every host at once; the first failure, named.
async fn on_all(ctx: &Ctx, hosts: &[&Host], script: &str) -> Result<(), String> {
    let results = futures::future::join_all(hosts.iter().map(|h| async move {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        session
            .run(script)
            .await
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", h.name))
    }))
    .await;
    results.into_iter().collect()
}
