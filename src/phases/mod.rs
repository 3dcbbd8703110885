//! The phase tree (kubeadm's model: named, ordered, addressable by path) and its runner
//! (k0sctl's model: each phase fans out over its hosts with bounded concurrency).

pub mod addons;
pub mod api;
pub mod artifacts;
pub mod bootstrap;
pub mod certs;
pub mod cni;
pub mod control_plane;
pub mod etcd;
pub mod expiration;
pub mod host;
pub mod kubelet;
pub mod local_kubeconfig;
pub mod preflight;
pub mod reset;
pub mod runtime;
pub mod step;
pub mod verify;

use crate::cluster::{Cluster, Host};
use crate::host::Action;
use crate::host::executor;
use crate::output::{HostOutcome, Reporter, RunSummary, Status};
use crate::ssh::{HostKeyPolicy, Session, SshError};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OnceCell;

/// How a phase does its work.
pub enum Work {
    /// Runs its children in order.
    Group,
    /// Desired state per host, applied through the executor.
    Actions(fn(&Cluster, &Host) -> Vec<Action>),
    /// Checks that change nothing.
    Preflight,
    /// Certificates and kubeconfigs: desired state depends on what the hosts hold.
    Pki(certs::Item),
    /// Components from the bundle: fetched once for all hosts, then shipped to each.
    Artifacts,
    /// Desired state that needs the run's context, then a health check.
    Step(Box<dyn step::Step>),
}

pub struct Phase {
    pub name: &'static str,
    pub summary: &'static str,
    pub work: Work,
    pub children: Vec<Phase>,
}

impl Phase {
    pub(crate) fn leaf(name: &'static str, summary: &'static str, work: Work) -> Phase {
        Phase {
            name,
            summary,
            work,
            children: Vec::new(),
        }
    }
}

/// The phases `init` runs, in order.
pub fn init_tree() -> Vec<Phase> {
    vec![
        Phase::leaf(
            "preflight",
            "check every host can run its roles; change nothing",
            Work::Preflight,
        ),
        host::phase(),
        certs::certs_phase(),
        certs::kubeconfig_phase(),
        artifacts_phase(),
        runtime::phase(),
        cni::phase(),
        etcd::phase(),
        control_plane::phase(),
        bootstrap::phase(),
        kubelet::kubelet_phase(),
        kubelet::kube_proxy_phase(),
        addons::phase(),
        verify::phase(),
    ]
}

/// The phases `join` runs, in order (workers get their credentials by TLS bootstrap).
pub fn join_tree() -> Vec<Phase> {
    vec![
        Phase::leaf(
            "preflight",
            "check every host can run its roles; change nothing",
            Work::Preflight,
        ),
        host::phase(),
        // control planes get the CA material and their own certificates; workers kube-proxy.conf
        certs::certs_phase(),
        certs::kubeconfig_phase(),
        artifacts_phase(),
        runtime::phase(),
        cni::phase(),
        etcd::phase(),
        control_plane::phase(),
        kubelet::kubelet_phase(),
        kubelet::kube_proxy_phase(),
        verify::phase(),
    ]
}

fn artifacts_phase() -> Phase {
    Phase::leaf(
        "artifacts",
        "ship the pinned components each host's roles need from the bundle",
        Work::Artifacts,
    )
}

/// Every path of a tree, depth first: `host`, `host/sysctl`, ...
pub fn paths(tree: &[Phase]) -> Vec<(String, &Phase)> {
    fn walk<'a>(prefix: &str, phases: &'a [Phase], out: &mut Vec<(String, &'a Phase)>) {
        for p in phases {
            let path = if prefix.is_empty() {
                p.name.to_string()
            } else {
                format!("{prefix}/{}", p.name)
            };
            out.push((path.clone(), p));
            walk(&path, &p.children, out);
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// The leaves to run: those under `only` (when given), minus those under any skipped path.
pub fn select<'a>(
    tree: &'a [Phase],
    only: Option<&str>,
    skip: &[String],
) -> Result<Vec<(String, &'a Phase)>, String> {
    let all = paths(tree);
    let known: BTreeSet<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    let unknown = |p: &str| {
        format!(
            "no phase named \"{p}\"; phases are: {}",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let only = only.map(|o| o.trim_matches('/'));
    if let Some(o) = only
        && !known.contains(o)
    {
        return Err(unknown(o));
    }
    for s in skip {
        if !known.contains(s.trim_matches('/')) {
            return Err(unknown(s));
        }
    }
    let under = |path: &str, root: &str| path == root || path.starts_with(&format!("{root}/"));
    Ok(all
        .into_iter()
        .filter(|(_, p)| p.children.is_empty())
        .filter(|(path, _)| only.is_none_or(|o| under(path, o)))
        .filter(|(path, _)| !skip.iter().any(|s| under(path, s.trim_matches('/'))))
        .collect())
}

/// Everything a run shares: the cluster, options, output, and one SSH connection per host.
pub struct Ctx {
    pub cluster: Arc<Cluster>,
    pub dry_run: bool,
    pub concurrency: usize,
    pub ignore_preflight: Vec<String>,
    pub out: Reporter,
    /// CAs and the service-account key of this run (memory only).
    pub pki: tokio::sync::Mutex<certs::PkiCache>,
    /// Certificates and kubeconfigs to re-issue even when compliant (`certs renew`).
    pub renew: BTreeSet<String>,
    /// Where the admin kubeconfig is written on the operator's machine.
    pub local_kubeconfig: Option<std::path::PathBuf>,
    /// The bundle lock file beside the inventory.
    pub lock_file: Option<std::path::PathBuf>,
    /// Host conditions that shape configuration, probed once per host and run.
    pub conditions: tokio::sync::Mutex<HashMap<String, step::Conditions>>,
    /// What the bundle gives each host, resolved once per run.
    pub bundle_plan: OnceCell<Result<Arc<step::BundlePlan>, String>>,
    /// API clients by credentials (`admin`, `super-admin`), made on first use.
    pub api_clients: tokio::sync::Mutex<HashMap<String, kube::Client>>,
    /// The bootstrap token of this run, made when a joining node first needs one.
    pub join_token: tokio::sync::Mutex<Option<crate::pki::token::BootstrapToken>>,
    /// Phases run and changes made so far in this run (the verify phase skips a no-op re-run).
    pub phases_done: std::sync::atomic::AtomicUsize,
    pub changes_done: std::sync::atomic::AtomicUsize,
    policy: HostKeyPolicy,
    sessions: HashMap<String, OnceCell<Arc<Session>>>,
}

impl Ctx {
    pub fn new(
        cluster: Arc<Cluster>,
        dry_run: bool,
        concurrency: usize,
        ignore_preflight: Vec<String>,
        policy: HostKeyPolicy,
        out: Reporter,
    ) -> Ctx {
        let sessions = cluster
            .hosts
            .iter()
            .map(|h| (h.name.clone(), OnceCell::new()))
            .collect();
        Ctx {
            cluster,
            dry_run,
            concurrency: concurrency.max(1),
            ignore_preflight,
            out,
            pki: Default::default(),
            renew: BTreeSet::new(),
            local_kubeconfig: None,
            lock_file: None,
            conditions: Default::default(),
            bundle_plan: OnceCell::new(),
            api_clients: Default::default(),
            join_token: Default::default(),
            phases_done: Default::default(),
            changes_done: Default::default(),
            policy,
            sessions,
        }
    }

    /// The host's connection, opened on first use and reused by every later phase.
    pub async fn session(&self, host: &Host) -> Result<Arc<Session>, SshError> {
        let cell = self
            .sessions
            .get(&host.name)
            .ok_or_else(|| SshError::Channel {
                host: host.name.clone(),
                detail: "not in the inventory".into(),
            })?;
        cell.get_or_try_init(|| async {
            Session::connect(&host.name, &host.ssh, self.policy)
                .await
                .map(Arc::new)
        })
        .await
        .cloned()
    }

    pub async fn close(self) {
        for (_, cell) in self.sessions {
            if let Some(s) = cell.into_inner()
                && let Ok(s) = Arc::try_unwrap(s)
            {
                s.close().await;
            }
        }
    }
}

/// Runs `f` for every host, at most `ctx.concurrency` at once, reporting each as it finishes.
pub async fn fan_out<'a, F, Fut>(
    ctx: &'a Ctx,
    path: &str,
    hosts: &'a [Host],
    f: F,
) -> Vec<HostOutcome>
where
    F: Fn(&'a Host) -> Fut,
    Fut: std::future::Future<Output = HostOutcome> + 'a,
{
    let pb = ctx.out.phase_start(path, hosts.len());
    let started = Instant::now();
    let mut outcomes: Vec<HostOutcome> = futures::stream::iter(hosts.iter().map(|h| {
        let fut = f(h);
        async move {
            let t = Instant::now();
            let mut o = fut.await;
            o.seconds = t.elapsed().as_secs_f64();
            o
        }
    }))
    .buffer_unordered(ctx.concurrency)
    .inspect(|o| ctx.out.host_done(path, o, pb.as_ref()))
    .collect()
    .await;
    outcomes.sort_by_key(|o| hosts.iter().position(|h| h.name == o.host));
    ctx.out
        .phase_done(path, &outcomes, started.elapsed().as_secs_f64(), pb);
    outcomes
}

/// Runs `f` for one host after the other, stopping at the first that fails.
pub async fn fan_out_in_order<'a, F, Fut>(
    ctx: &'a Ctx,
    path: &str,
    hosts: &'a [Host],
    f: F,
) -> Vec<HostOutcome>
where
    F: Fn(&'a Host) -> Fut,
    Fut: std::future::Future<Output = HostOutcome> + 'a,
{
    let pb = ctx.out.phase_start(path, hosts.len());
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for h in hosts {
        let t = Instant::now();
        let mut o = f(h).await;
        o.seconds = t.elapsed().as_secs_f64();
        ctx.out.host_done(path, &o, pb.as_ref());
        let failed = o.status == Status::Failed;
        outcomes.push(o);
        if failed {
            break;
        }
    }
    ctx.out
        .phase_done(path, &outcomes, started.elapsed().as_secs_f64(), pb);
    outcomes
}

/// Plans `actions` on `host` and applies them (or, in a dry run, describes them).
async fn converge(ctx: &Ctx, host: &Host, actions: &[Action]) -> Result<HostOutcome, String> {
    let actions = actions.to_vec();
    async {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let plan = executor::plan(&session, &actions)
            .await
            .map_err(|e| e.to_string())?;
        let mut o = HostOutcome::ok(&host.name);
        if ctx.dry_run {
            o.changes = plan.changes.iter().map(|c| c.summary.clone()).collect();
            o.details = executor::describe(&session, &actions, &plan)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            let applied = executor::apply(&session, &actions, &plan)
                .await
                .map_err(|e| e.to_string())?;
            o.changes = applied.changes;
            o.bytes_uploaded = applied.bytes_uploaded;
        }
        Ok(o)
    }
    .await
}

async fn run_actions(
    ctx: &Ctx,
    host: &Host,
    desired: fn(&Cluster, &Host) -> Vec<Action>,
) -> HostOutcome {
    converge(ctx, host, &desired(&ctx.cluster, host))
        .await
        .unwrap_or_else(|e| HostOutcome::failed(&host.name, e))
}

async fn run_pki(ctx: &Ctx, host: &Host, item: certs::Item) -> HostOutcome {
    let result = async {
        let (actions, notes) = certs::desired(ctx, host, item).await?;
        let mut o = converge(ctx, host, &actions).await?;
        o.notes = notes;
        if item == certs::Item::Kubeconfig(crate::pki::kubeconfig::KubeconfigKind::Admin)
            && !ctx.dry_run
            && certs::first_control_plane(ctx).is_some_and(|f| f.name == host.name)
            && let Some(path) = &ctx.local_kubeconfig
            && let Some(Action::File(f)) = actions.first()
        {
            o.notes.push(local_kubeconfig::write(path, &f.content)?);
        }
        Ok::<_, String>(o)
    }
    .await;
    result.unwrap_or_else(|e| HostOutcome::failed(&host.name, e))
}

async fn run_step(ctx: &Ctx, host: &Host, step: &dyn step::Step) -> HostOutcome {
    let result = async {
        let actions = step.desired(ctx, host).await?;
        let mut o = converge(ctx, host, &actions).await?;
        let after = if ctx.dry_run {
            step.dry_run(ctx, host).await?
        } else {
            step.after(ctx, host, !o.changes.is_empty()).await?
        };
        o.changes.extend(after.changes);
        o.notes.extend(after.notes);
        Ok::<_, String>(o)
    }
    .await;
    result.unwrap_or_else(|e| HostOutcome::failed(&host.name, e))
}

/// The hosts a command acts on.
pub struct Scope {
    /// Where state-changing phases act.
    pub hosts: Vec<Host>,
    /// What preflight checks (init: the whole inventory, before anything changes).
    pub preflight_hosts: Vec<Host>,
}

/// Runs the selected phases in order, stopping after the first phase that fails.
pub async fn run(
    ctx: &Ctx,
    command: &str,
    selected: &[(String, &Phase)],
    scope: &Scope,
) -> RunSummary {
    let hosts = &scope.hosts;
    let started = Instant::now();
    let mut summary = RunSummary {
        command: command.to_string(),
        phases_run: 0,
        changes: 0,
        hosts: 0,
        seconds: 0.0,
        failed_phase: None,
        next_steps: Vec::new(),
    };
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for (path, phase) in selected {
        let outcomes = match &phase.work {
            Work::Group => continue,
            Work::Actions(desired) => {
                fan_out(ctx, path, hosts, |h| run_actions(ctx, h, *desired)).await
            }
            Work::Preflight => preflight::run(ctx, path, &scope.preflight_hosts).await,
            Work::Artifacts => artifacts::run(ctx, path, hosts).await,
            Work::Step(step) => {
                let on = if step.every_node_on_join() && command.starts_with("join") {
                    &ctx.cluster.hosts
                } else {
                    hosts
                };
                let targets: Vec<Host> = on
                    .iter()
                    .filter(|h| step.applies_to(ctx, h))
                    .cloned()
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                if step.one_at_a_time() {
                    fan_out_in_order(ctx, path, &targets, |h| run_step(ctx, h, step.as_ref())).await
                } else {
                    fan_out(ctx, path, &targets, |h| run_step(ctx, h, step.as_ref())).await
                }
            }
            Work::Pki(item) => {
                let targets: Vec<Host> = hosts
                    .iter()
                    .filter(|h| item.applies_to(ctx, h))
                    .cloned()
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                fan_out(ctx, path, &targets, |h| run_pki(ctx, h, *item)).await
            }
        };
        summary.phases_run += 1;
        touched.extend(outcomes.iter().map(|o| o.host.clone()));
        let changes = outcomes.iter().map(|o| o.changes.len()).sum::<usize>();
        summary.changes += changes;
        ctx.phases_done
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctx.changes_done
            .fetch_add(changes, std::sync::atomic::Ordering::SeqCst);
        if outcomes.iter().any(|o| o.status == Status::Failed) {
            summary.failed_phase = Some(path.clone());
            break;
        }
    }
    summary.hosts = touched.len();
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Vec<Phase> {
        vec![
            Phase::leaf("preflight", "", Work::Preflight),
            Phase {
                name: "certs",
                summary: "",
                work: Work::Group,
                children: vec![
                    Phase::leaf("ca", "", Work::Preflight),
                    Phase::leaf("apiserver", "", Work::Preflight),
                ],
            },
        ]
    }

    fn names(v: Vec<(String, &Phase)>) -> Vec<String> {
        v.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn selects_subtrees_and_skips() {
        let t = tree();
        assert_eq!(
            names(select(&t, None, &[]).unwrap()),
            ["preflight", "certs/ca", "certs/apiserver"]
        );
        assert_eq!(
            names(select(&t, Some("certs"), &[]).unwrap()),
            ["certs/ca", "certs/apiserver"]
        );
        assert_eq!(
            names(select(&t, None, &["certs/ca".into(), "preflight".into()]).unwrap()),
            ["certs/apiserver"]
        );
        let Err(err) = select(&t, Some("cert"), &[]) else {
            panic!("an unknown phase was accepted")
        };
        assert!(err.contains("no phase named \"cert\""), "{err}");
        assert!(err.contains("certs/apiserver"), "{err}");
        assert!(select(&t, None, &["nope".into()]).is_err());
    }
}
