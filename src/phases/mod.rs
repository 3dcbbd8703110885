//! The phase tree (kubeadm's model: named, ordered, addressable by path) and its runner
//! (k0sctl's model: each phase fans out over its hosts with bounded concurrency).

pub mod addons;
pub mod api_endpoint;
pub mod artifacts;
pub mod bootstrap;
pub mod certs;
pub mod cni;
pub mod control_plane;
pub mod csr_approver;
pub mod etcd;
pub mod expiration;
pub mod host;
pub mod kubelet;
pub mod local_kubeconfig;
pub mod network_policy;
pub mod preflight;
pub mod reset;
pub mod runtime;
#[cfg(test)]
mod snapshots;
pub mod step;
pub mod verify;

use crate::cluster::Host;
use crate::output::{HostOutcome, RunSummary, Status};
use crate::run::Ctx;
use futures::StreamExt;
use std::collections::BTreeSet;
use std::time::Instant;

/// How a phase does its work.
pub enum Work {
    /// Runs its children in order.
    Group,
    /// Runs its children as one sequence per batch of `batch` hosts (a rolling change: every
    /// child on the first batch, then on the next), stopping at the first failure; each
    /// child's `after` (a health wait) is the gate before the next host. 0: one batch of all.
    Rolling { batch: usize },
    /// Checks that change nothing.
    Preflight,
    /// Components from the bundle: fetched once for all hosts, then shipped to each.
    Artifacts(artifacts::Ship),
    /// Every state-changing phase: probes, shared inputs, pure desired state, then `after`.
    Step(Box<dyn step::Runnable>),
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

    /// A leaf that runs `step`.
    pub(crate) fn step<S: step::Step + 'static>(
        name: &'static str,
        summary: &'static str,
        step: S,
    ) -> Phase {
        Phase::leaf(name, summary, Work::Step(Box::new(step)))
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
        api_endpoint::vip_phase(),
        api_endpoint::api_proxy_phase(),
        bootstrap::phase(),
        kubelet::kubelet_phase(),
        kubelet::kube_proxy_phase(),
        network_policy::phase(),
        // its kubeconfig's token comes from the controller manager, seconds after it started:
        // the node phases run meanwhile (each kubelet's serving request is approved by
        // the kubelet phase itself)
        csr_approver::phase(),
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
        api_endpoint::vip_phase(),
        api_endpoint::api_proxy_phase(),
        kubelet::kubelet_phase(),
        kubelet::kube_proxy_phase(),
        network_policy::phase(),
        csr_approver::phase(),
        verify::phase(),
    ]
}

fn artifacts_phase() -> Phase {
    Phase::leaf(
        "artifacts",
        "ship the pinned components each host's roles need from the bundle",
        Work::Artifacts(artifacts::Ship::All),
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

/// A leaf the run will run, and the rolling group it belongs to (its path and batch size).
pub struct Selected<'a> {
    pub path: String,
    pub phase: &'a Phase,
    pub rolling: Option<(String, usize)>,
}

/// The leaves to run: those under `only` (when given), minus those under any skipped path.
pub fn select<'a>(
    tree: &'a [Phase],
    only: Option<&str>,
    skip: &[String],
) -> Result<Vec<Selected<'a>>, String> {
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
    let rolling: Vec<(String, usize)> = all
        .iter()
        .filter_map(|(path, p)| match p.work {
            Work::Rolling { batch } => Some((path.clone(), batch)),
            _ => None,
        })
        .collect();
    Ok(all
        .iter()
        .filter(|(_, p)| p.children.is_empty())
        .filter(|(path, _)| only.is_none_or(|o| under(path, o)))
        .filter(|(path, _)| !skip.iter().any(|s| under(path, s.trim_matches('/'))))
        .map(|(path, phase)| Selected {
            path: path.clone(),
            phase,
            rolling: rolling
                .iter()
                .filter(|(root, _)| path.starts_with(&format!("{root}/")))
                .max_by_key(|(root, _)| root.len())
                .cloned(),
        })
        .collect())
}

/// Runs `f` for every host, at most `ctx.options.concurrency` at once, reporting each as it finishes.
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
    .buffer_unordered(ctx.options.concurrency)
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

/// The hosts a command acts on.
pub struct Scope {
    /// Where state-changing phases act.
    pub hosts: Vec<Host>,
    /// What preflight checks (init: the whole inventory, before anything changes).
    pub preflight_hosts: Vec<Host>,
}

/// Runs the selected phases in order, stopping after the first phase that fails. The leaves of
/// a rolling group run as one sequence per batch of hosts.
pub async fn run(ctx: &Ctx, command: &str, selected: &[Selected<'_>], scope: &Scope) -> RunSummary {
    let started = Instant::now();
    // slow local inputs of later phases start now, beside the earlier phases' work
    for s in selected {
        if let Work::Step(step) = &s.phase.work {
            step.warm_up();
        }
    }
    let mut run = Tally {
        summary: RunSummary {
            command: command.to_string(),
            phases_run: 0,
            changes: 0,
            hosts: 0,
            seconds: 0.0,
            failed_phase: None,
            failed_hosts: Vec::new(),
            next_steps: Vec::new(),
        },
        touched: BTreeSet::new(),
    };
    let mut i = 0;
    'phases: while i < selected.len() {
        let Some((root, batch)) = &selected[i].rolling else {
            if !run_phase(ctx, &mut run, &selected[i], scope, &scope.hosts).await {
                break;
            }
            i += 1;
            continue;
        };
        // the leaves of this rolling group, then each batch of hosts through all of them
        let end = selected[i..]
            .iter()
            .position(|s| s.rolling.as_ref().map(|r| &r.0) != Some(root))
            .map_or(selected.len(), |n| i + n);
        let size = if *batch == 0 {
            scope.hosts.len()
        } else {
            *batch
        };
        for hosts in scope.hosts.chunks(size.max(1)) {
            for leaf in &selected[i..end] {
                if !run_phase(ctx, &mut run, leaf, scope, hosts).await {
                    break 'phases;
                }
            }
        }
        i = end;
    }
    let mut summary = run.summary;
    summary.hosts = run.touched.len();
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

/// The run's tally so far.
struct Tally {
    summary: RunSummary,
    touched: BTreeSet<String>,
}

/// Runs one leaf on `hosts` and adds it to the tally; false when it failed somewhere.
async fn run_phase(
    ctx: &Ctx,
    run: &mut Tally,
    leaf: &Selected<'_>,
    scope: &Scope,
    hosts: &[Host],
) -> bool {
    let progress = step::Progress {
        phases_run: run.summary.phases_run,
        changes: run.summary.changes,
    };
    let path = &leaf.path;
    let outcomes = match &leaf.phase.work {
        Work::Group | Work::Rolling { .. } => return true,
        Work::Preflight => preflight::run(ctx, path, &scope.preflight_hosts).await,
        Work::Artifacts(what) => artifacts::run(ctx, path, hosts, *what).await,
        Work::Step(step) => {
            let on_join = run.summary.command.starts_with("join");
            match step.run(ctx, path, hosts, on_join, progress).await {
                Some(outcomes) => outcomes,
                None => return true,
            }
        }
    };
    run.summary.phases_run += 1;
    run.touched.extend(outcomes.iter().map(|o| o.host.clone()));
    run.summary.changes += outcomes.iter().map(|o| o.changes.len()).sum::<usize>();
    if step::failed(&outcomes) {
        run.summary.failed_phase = Some(path.clone());
        run.summary.failed_hosts = outcomes
            .iter()
            .filter(|o| o.status == Status::Failed)
            .map(|o| o.host.clone())
            .collect();
        return false;
    }
    true
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

    fn names(v: Vec<Selected>) -> Vec<String> {
        v.into_iter().map(|s| s.path).collect()
    }

    #[test]
    fn selects_subtrees_and_skips() -> Result<(), Box<dyn std::error::Error>> {
        let t = tree();
        assert_eq!(
            names(select(&t, None, &[])?),
            ["preflight", "certs/ca", "certs/apiserver"]
        );
        assert_eq!(
            names(select(&t, Some("certs"), &[])?),
            ["certs/ca", "certs/apiserver"]
        );
        assert_eq!(
            names(select(&t, None, &["certs/ca".into(), "preflight".into()])?),
            ["certs/apiserver"]
        );
        let Err(err) = select(&t, Some("cert"), &[]) else {
            panic!("an unknown phase was accepted")
        };
        assert!(err.contains("no phase named \"cert\""), "{err}");
        assert!(err.contains("certs/apiserver"), "{err}");
        assert!(select(&t, None, &["nope".into()]).is_err());
        Ok(())
    }

    /// Records where it ran (through `after`: no actions, so no SSH), failing on one host.
    struct Record {
        name: &'static str,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        fail_on: Option<&'static str>,
    }

    #[async_trait::async_trait]
    impl step::Step for Record {
        type Shared = ();

        async fn after(
            &self,
            _: &Ctx,
            host: &Host,
            _: &step::Applied<'_, ()>,
        ) -> Result<step::After, String> {
            self.log
                .lock()
                .map_err(|e| e.to_string())?
                .push(format!("{}:{}", self.name, host.name));
            match self.fail_on {
                Some(h) if h == host.name => Err(format!("{} is down", host.name)),
                _ => Ok(step::After::default()),
            }
        }
    }

    fn rolling_tree(
        log: &std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        batch: usize,
        fail_on: Option<&'static str>,
    ) -> Vec<Phase> {
        let rec = |name, fail_on| Record {
            name,
            log: log.clone(),
            fail_on,
        };
        vec![
            Phase {
                name: "upgrade",
                summary: "",
                work: Work::Rolling { batch },
                children: vec![
                    Phase::step("a", "", rec("a", None)),
                    Phase::step("b", "", rec("b", fail_on)),
                ],
            },
            Phase::step("c", "", rec("c", None)),
        ]
    }

    async fn run_tree(tree: &[Phase]) -> Result<RunSummary, String> {
        let cluster = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: n1, address: 192.168.7.20, roles: [control-plane]}\n  - {name: n2, address: 192.168.7.21, roles: [worker]}\n  - {name: n3, address: 192.168.7.22, roles: [worker]}\n",
        );
        let hosts = cluster.hosts.clone();
        let ctx = Ctx::new(
            std::sync::Arc::new(cluster),
            crate::run::Options {
                concurrency: 4,
                ..Default::default()
            },
            crate::ssh::HostKeyPolicy::Strict,
            crate::output::Reporter::new(crate::output::Format::Json, false, false),
        );
        let selected = select(tree, None, &[]).map_err(|e| format!("{e:?}"))?;
        let scope = Scope {
            hosts: hosts.clone(),
            preflight_hosts: hosts,
        };
        Ok(run(&ctx, "upgrade", &selected, &scope).await)
    }

    #[tokio::test]
    async fn a_rolling_group_takes_each_batch_through_all_its_phases_and_stops_at_a_failure()
    -> Result<(), Box<dyn std::error::Error>> {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let summary = run_tree(&rolling_tree(&log, 1, None)).await?;
        assert_eq!(summary.failed_phase, None);
        let mut seen = log.lock().map_err(|e| e.to_string())?.clone();
        let after: Vec<String> = seen.split_off(6);
        assert_eq!(seen, ["a:n1", "b:n1", "a:n2", "b:n2", "a:n3", "b:n3"]);
        // a phase outside the group runs once, on every host, after the group
        let mut after = after;
        after.sort();
        assert_eq!(after, ["c:n1", "c:n2", "c:n3"]);

        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let summary = run_tree(&rolling_tree(&log, 1, Some("n2"))).await?;
        assert_eq!(summary.failed_phase.as_deref(), Some("upgrade/b"));
        // the gate held: n3 was never touched, nor anything after the group
        assert_eq!(
            *log.lock().map_err(|e| e.to_string())?,
            ["a:n1", "b:n1", "a:n2", "b:n2"]
        );

        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        run_tree(&rolling_tree(&log, 2, None)).await?;
        let seen = log.lock().map_err(|e| e.to_string())?.clone();
        let mut first: Vec<String> = seen[..2].to_vec();
        first.sort();
        assert_eq!(first, ["a:n1", "a:n2"]);
        let mut second: Vec<String> = seen[2..4].to_vec();
        second.sort();
        assert_eq!(second, ["b:n1", "b:n2"]);
        assert_eq!(seen[4..6], ["a:n3", "b:n3"]);
        Ok(())
    }
}
