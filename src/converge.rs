//! `provision apply`: the cluster converged on its inventory in one command, k0sctl's way. No
//! cluster yet: `init` on the seed, then `join` of the others. A cluster whose version is not
//! the inventory's: the upgrade (its plan shown and confirmed), on the hosts that are Nodes.
//! Then `init`'s phases, each on every host at once (the seed as `init` does, the others as
//! `join` does), re-apply the configuration and bring in hosts that are not Nodes yet, and
//! `verify` proves the network when anything changed. Nothing moved: no change, said so.

use crate::output::RunSummary;
use crate::phases::{self, Scope};
use crate::run::Ctx;
use crate::upgrade::apply::{self as upgrade, Stop};
use std::path::Path;

/// What an apply did, or in a dry run would do.
pub struct Converged {
    pub summary: RunSummary,
    /// The upgrade had steps to make.
    pub upgraded: bool,
}

/// Whether the seed serves a cluster already (its API server is active).
async fn serving(ctx: &Ctx) -> Result<bool, String> {
    let Some(seed) = ctx.cluster.seed_control_plane() else {
        return Err("the inventory has no control plane".into());
    };
    let session = ctx.session(seed).await.map_err(|e| e.to_string())?;
    let out = session
        .run("systemctl is-active --quiet kube-apiserver && echo serving; true")
        .await
        .map_err(|e| e.to_string())?;
    Ok(out.trim() == "serving")
}

/// Runs `tree` (minus `skip`) on `scope` under `command` (`join` makes the steps that act on
/// every node on a join do so); stops the apply when it fails.
async fn run_tree(
    ctx: &Ctx,
    command: &str,
    tree: &[phases::Phase],
    skip: &[String],
    scope: Scope,
) -> Result<RunSummary, Stop> {
    if scope.hosts.is_empty() {
        return Ok(RunSummary::default());
    }
    let selected = phases::select(tree, None, skip)?;
    let summary = phases::run(ctx, command, &selected, &scope).await;
    if summary.failed_phase.is_some() {
        ctx.out.summary(&summary);
        return Err(Stop::Failed);
    }
    Ok(summary)
}

/// Converges the cluster; `confirm` is asked before an upgrade (a dry run asks nothing).
pub async fn apply(
    ctx: &Ctx,
    opts: &upgrade::Options,
    skip: &[String],
    snapshot: &Path,
    confirm: impl Fn() -> bool,
) -> Result<Converged, Stop> {
    let mut total = RunSummary {
        command: "apply".into(),
        ..Default::default()
    };
    let mut upgraded = false;
    if serving(ctx).await? {
        let plan = upgrade::apply(ctx, opts, snapshot, confirm).await?;
        upgraded = !plan.nothing_to_do();
    }
    let seed: Vec<_> = ctx
        .cluster
        .seed_control_plane()
        .cloned()
        .into_iter()
        .collect();
    // the seed first (etcd members join one at a time, after it), then the inventory's order
    let hosts: Vec<_> = seed
        .iter()
        .chain(
            ctx.cluster
                .hosts
                .iter()
                .filter(|h| !seed.iter().any(|s| s.name == h.name)),
        )
        .cloned()
        .collect();
    // verify once, at the end (an upgrade verified its own work)
    let mut no_verify = skip.to_vec();
    no_verify.push("verify".into());
    // one pass of init's phases over every host, k0sctl's way: each phase runs on the seed
    // and on the joining hosts at once. join's phases are init's, less the seed's own
    // (bootstrap and addons act on the seed only), and each step tells the seed from the
    // others, so this is init on the seed then join on the others, with the hosts of each
    // phase in parallel.
    let converged = run_tree(
        ctx,
        "apply",
        &phases::init_tree(),
        &no_verify,
        Scope {
            hosts,
            preflight_hosts: ctx.cluster.hosts.clone(),
        },
    )
    .await?;
    upgrade::add(&mut total, &converged);
    total.hosts = ctx.cluster.hosts.len();
    let skipped_verify = skip.iter().any(|s| s == "verify");
    if total.changes > 0 && !skipped_verify && !ctx.dry_run() {
        let verify = run_tree(
            ctx,
            "apply (verify)",
            &[phases::verify::phase()],
            &[],
            Scope {
                hosts: seed,
                preflight_hosts: Vec::new(),
            },
        )
        .await?;
        upgrade::add(&mut total, &verify);
    }
    ctx.out.summary(&total);
    Ok(Converged {
        summary: total,
        upgraded,
    })
}
