//! `provision upgrade apply`: the plan's checks, then kubeadm's order. An etcd snapshot is kept
//! beside the inventory; the new version's files go to every host while nothing restarts; the
//! control planes switch one at a time (etcd, then the API server, controller manager and
//! scheduler, each healthy before the next host); the add-ons; then the nodes, control planes
//! first, workers in batches: drained, switched, restarted, Ready on the new kubelet,
//! uncordoned. A host that does not come back is rolled back to the versions it ran, and the run
//! stops there; running it again continues where it stopped.

use super::plan::{Plan, Step};
use super::{prune, rollback, uncordon};
use crate::cluster::Host;
use crate::output::RunSummary;
use crate::phases::artifacts::Ship;
use crate::phases::{self, Phase, Scope, Work};
use crate::run::Ctx;
use std::path::Path;
use std::time::Duration;

/// The components switched with a control plane (its node's own follow with the nodes).
const CONTROL_PLANE: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

pub struct Options {
    /// Workers at once: a number or a percentage.
    pub max_unavailable: String,
    /// How long a drain waits on PodDisruptionBudgets.
    pub drain_timeout: Duration,
    /// Leave out hosts that are not Nodes yet (they join afterwards, at the new version).
    pub joined_only: bool,
    /// Go ahead although objects use API versions the target removes.
    pub ignore_deprecated: bool,
    /// Delete the pods a PodDisruptionBudget still protects once the drain's wait is over.
    pub force: bool,
}

/// Why an upgrade stopped (what was said already is not repeated).
#[derive(Debug)]
pub enum Stop {
    /// The plan refused it; nothing changed.
    Refused,
    /// The operator said no.
    NotConfirmed,
    /// A stage failed; its hosts were rolled back where they could be.
    Failed,
    Error(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Stop {
        Stop::Error(e)
    }
}

fn stage_tree() -> Vec<Phase> {
    vec![
        Phase::leaf(
            "preflight",
            "check every host can run its roles; change nothing",
            Work::Preflight,
        ),
        Phase::leaf(
            "stage",
            "ship the new version's files to every host beside the running ones; nothing switches",
            Work::Artifacts(Ship::FilesOnly),
        ),
    ]
}

fn control_plane_tree() -> Vec<Phase> {
    vec![Phase {
        name: "control-planes",
        summary: "one control plane after the other: etcd, then the API server, controller manager and scheduler",
        work: Work::Rolling { batch: 1 },
        children: vec![
            // certificates close to expiry are renewed on the way (kubeadm does so too)
            phases::certs::certs_phase(),
            phases::certs::kubeconfig_phase(),
            Phase::leaf(
                "switch",
                "point the control plane's binaries at the new version",
                Work::Artifacts(Ship::Components(CONTROL_PLANE)),
            ),
            phases::etcd::phase(),
            phases::control_plane::phase(),
        ],
    }]
}

fn nodes_tree(batch: usize, drain_wait: Duration, force: bool) -> Vec<Phase> {
    vec![Phase {
        name: "nodes",
        summary: "node by node (workers in batches): drain, switch, restart, Ready, uncordon",
        work: Work::Rolling { batch },
        children: vec![
            Phase::step(
                "drain",
                "cordon the node and evict its pods (PodDisruptionBudgets respected)",
                phases::reset::Drain {
                    cluster_stays: true,
                    wait: drain_wait,
                    mark: true,
                    force,
                },
            ),
            phases::certs::kubeconfig_phase(),
            Phase::leaf(
                "switch",
                "point the node's binaries at the new version",
                Work::Artifacts(Ship::All),
            ),
            phases::runtime::phase(),
            phases::cni::phase(),
            phases::kubelet::kubelet_phase(),
            phases::kubelet::kube_proxy_phase(),
            phases::network_policy::phase(),
            Phase::step(
                "uncordon",
                "wait for the Node on the new kubelet and Ready, then uncordon it",
                uncordon::Uncordon,
            ),
        ],
    }]
}

/// The hosts with a plan step in one of `stages` (by the stage's start), in inventory order.
fn hosts_in(ctx: &Ctx, plan: &Plan, stages: &[&str], control_plane: Option<bool>) -> Vec<Host> {
    ctx.cluster
        .hosts
        .iter()
        .filter(|h| control_plane.is_none_or(|cp| h.control_plane == cp))
        .filter(|h| {
            plan.steps
                .iter()
                .any(|s| s.host == h.name && stages.iter().any(|st| s.stage.starts_with(st)))
        })
        .cloned()
        .collect()
}

/// The plan's steps on `host`.
fn steps_of<'a>(plan: &'a Plan, host: &str) -> Vec<&'a Step> {
    plan.steps.iter().filter(|s| s.host == host).collect()
}

/// Runs `tree` on `hosts`; on a failure rolls back the hosts it failed on.
async fn stage(
    ctx: &Ctx,
    plan: &Plan,
    name: &str,
    tree: &[Phase],
    hosts: Vec<Host>,
    preflight_hosts: Vec<Host>,
) -> Result<RunSummary, Stop> {
    if hosts.is_empty() {
        return Ok(RunSummary::default());
    }
    let selected = phases::select(tree, None, &[])?;
    let scope = Scope {
        hosts,
        preflight_hosts,
    };
    let summary = phases::run(ctx, name, &selected, &scope).await;
    if summary.failed_phase.is_none() {
        return Ok(summary);
    }
    ctx.out.summary(&summary);
    let rolling_back =
        !ctx.dry_run() && name != "upgrade apply (stage)" && name != "upgrade apply (prune)";
    for host in summary
        .failed_hosts
        .iter()
        .filter_map(|n| ctx.cluster.host(n))
        .filter(|_| rolling_back)
    {
        match rollback::run(ctx, host, &steps_of(plan, &host.name)).await {
            Ok(lines) => {
                eprintln!(
                    "{} rolled back to the versions it ran before:{}",
                    host.name,
                    lines.iter().map(|l| format!("\n  {l}")).collect::<String>()
                );
                match uncordon::undo_cordon(ctx, host).await {
                    Ok(true) => eprintln!("  uncordoned {}", host.name),
                    Ok(false) => {}
                    Err(e) => eprintln!("  {} stays cordoned: {e}", host.name),
                }
            }
            Err(e) => eprintln!(
                "{} could not be rolled back ({e}); it stays cordoned if its drain cordoned it: run the same command again once it answers",
                host.name
            ),
        }
    }
    Err(Stop::Failed)
}

/// The upgrade to the inventory's version. `confirm` is asked once the plan is printed;
/// `snapshot` is where etcd's snapshot is kept.
pub async fn apply(
    ctx: &Ctx,
    opts: &Options,
    snapshot: &Path,
    confirm: impl Fn() -> bool,
) -> Result<Plan, Stop> {
    let plan = super::plan_for(
        ctx,
        &opts.max_unavailable,
        opts.joined_only,
        opts.ignore_deprecated,
    )
    .await?;
    ctx.out.record(
        "upgrade-plan",
        "plan",
        serde_json::to_value(&plan).unwrap_or_default(),
        &super::table(&ctx.cluster.name, &plan),
    );
    if !plan.refusals.is_empty() {
        return Err(Stop::Refused);
    }
    let cordoned = uncordon::cordoned_nodes(ctx).await?;
    for n in &cordoned {
        ctx.out.note(&format!(
            "{n} was left cordoned by an upgrade that did not finish: it goes through its steps again"
        ));
    }
    if plan.nothing_to_do() && cordoned.is_empty() {
        return Ok(plan);
    }
    if !ctx.dry_run() && !confirm() {
        return Err(Stop::NotConfirmed);
    }
    let batch = super::plan::batch_size(
        &opts.max_unavailable,
        ctx.cluster
            .hosts
            .iter()
            .filter(|h| !h.control_plane)
            .count(),
    )?;
    if ctx.dry_run() {
        ctx.out.note(&format!(
            "would save an etcd snapshot to {}",
            snapshot.display()
        ));
    } else {
        let saved = crate::snapshot::save(ctx, snapshot, false).await?;
        ctx.out.note(&format!(
            "etcd snapshot before the upgrade: {} (revision {}, from {})",
            saved.path.display(),
            saved.status.revision,
            saved.host
        ));
    }
    let all = ctx.cluster.hosts.clone();
    let mut total = stage(
        ctx,
        &plan,
        "upgrade apply (stage)",
        &stage_tree(),
        all.clone(),
        all,
    )
    .await?;
    let control_planes = hosts_in(ctx, &plan, &["etcd", "control-plane"], Some(true));
    let cp = stage(
        ctx,
        &plan,
        "upgrade apply (control planes)",
        &control_plane_tree(),
        control_planes,
        Vec::new(),
    )
    .await?;
    add(&mut total, &cp);
    let seed: Vec<Host> = ctx
        .cluster
        .seed_control_plane()
        .cloned()
        .into_iter()
        .collect();
    let addons = vec![phases::addons::phase()];
    add(
        &mut total,
        &stage(
            ctx,
            &plan,
            "upgrade apply (add-ons)",
            &addons,
            seed,
            Vec::new(),
        )
        .await?,
    );
    let with_cordoned = |mut hosts: Vec<Host>, control_plane: bool| {
        for h in ctx
            .cluster
            .hosts
            .iter()
            .filter(|h| h.control_plane == control_plane)
        {
            if cordoned.contains(&h.name) && !hosts.iter().any(|x| x.name == h.name) {
                hosts.push(h.clone());
            }
        }
        hosts
    };
    let cp_nodes = with_cordoned(
        hosts_in(ctx, &plan, &["control-plane node"], Some(true)),
        true,
    );
    let tree = nodes_tree(1, opts.drain_timeout, opts.force);
    add(
        &mut total,
        &stage(
            ctx,
            &plan,
            "upgrade apply (control-plane nodes)",
            &tree,
            cp_nodes,
            Vec::new(),
        )
        .await?,
    );
    let workers = with_cordoned(hosts_in(ctx, &plan, &["workers"], Some(false)), false);
    let tree = nodes_tree(batch, opts.drain_timeout, opts.force);
    add(
        &mut total,
        &stage(
            ctx,
            &plan,
            "upgrade apply (workers)",
            &tree,
            workers,
            Vec::new(),
        )
        .await?,
    );
    let prune = vec![Phase::step(
        "prune",
        "remove each component's versions older than the previous one (kept for a rollback)",
        prune::Prune,
    )];
    let all = ctx.cluster.hosts.clone();
    add(
        &mut total,
        &stage(ctx, &plan, "upgrade apply (prune)", &prune, all, Vec::new()).await?,
    );
    total.command = "upgrade apply".into();
    ctx.out.summary(&total);
    if !ctx.dry_run() {
        let report = crate::verify::run(ctx, super::verify_expects(opts.joined_only)).await?;
        ctx.out.record(
            "verify",
            "report",
            serde_json::from_str(&report.json()).unwrap_or_default(),
            &report.table(),
        );
        if !report.passed() {
            return Err(Stop::Failed);
        }
    }
    Ok(plan)
}

/// Adds `part`'s counts to `total`.
pub fn add(total: &mut RunSummary, part: &RunSummary) {
    total.phases_run += part.phases_run;
    total.changes += part.changes;
    total.hosts = total.hosts.max(part.hosts);
    total.seconds += part.seconds;
}
