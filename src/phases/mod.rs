//! The phase tree (kubeadm's model: named, ordered, addressable by path) and its runner
//! (k0sctl's model: each phase fans out over its hosts with bounded concurrency).

pub mod addons;
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
    /// Checks that change nothing.
    Preflight,
    /// Components from the bundle: fetched once for all hosts, then shipped to each.
    Artifacts,
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
        let progress = step::Progress {
            phases_run: summary.phases_run,
            changes: summary.changes,
        };
        let outcomes = match &phase.work {
            Work::Group => continue,
            Work::Preflight => preflight::run(ctx, path, &scope.preflight_hosts).await,
            Work::Artifacts => artifacts::run(ctx, path, hosts).await,
            Work::Step(step) => {
                let on_join = command.starts_with("join");
                match step.run(ctx, path, hosts, on_join, progress).await {
                    Some(outcomes) => outcomes,
                    None => continue,
                }
            }
        };
        summary.phases_run += 1;
        touched.extend(outcomes.iter().map(|o| o.host.clone()));
        summary.changes += outcomes.iter().map(|o| o.changes.len()).sum::<usize>();
        if step::failed(&outcomes) {
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
