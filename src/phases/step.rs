//! The one contract of a state-changing phase. A step declares the hosts it acts on and what it
//! must observe on each (probes); `prepare` reads, once per run of the phase, the inputs its
//! hosts share (the bundle plan, a CA, a join token); `desired` is a pure function from the
//! cluster, the host, its observations and those shared inputs to actions, which the executor
//! applies (or, in a dry run, describes); `after` waits for health or acts through the API.
//!
//! No SSH and no API call happens in `desired`, so every step's dry run comes from the executor
//! and `desired` is unit-tested without a host.

use super::fan_out;
use crate::cluster::{Cluster, Host};
use crate::host::Action;
use crate::host::executor;
use crate::host::facts::Fact;
use crate::host::probe::{self, Observed, Probe};
use crate::output::{HostOutcome, Status};
use crate::run::Ctx;

#[async_trait::async_trait]
pub trait Step: Send + Sync {
    /// What `prepare` gives every host's `desired` (`()` when nothing).
    type Shared: Default + Send + Sync;

    /// Whether the step acts on this host of the command's scope.
    fn applies_to(&self, _cluster: &Cluster, _host: &Host) -> bool {
        true
    }

    /// On `join`, act on every node of the inventory, not only the joining ones.
    fn every_node_on_join(&self) -> bool {
        false
    }

    /// Hosts one at a time, stopping at the first that fails (etcd members join one by one).
    fn one_at_a_time(&self) -> bool {
        false
    }

    /// A step that only proves what earlier phases did: skipped, with this note, when the run
    /// ran phases before it and none of them changed anything.
    fn skipped_when_nothing_changed(&self) -> Option<&'static str> {
        None
    }

    /// Called once when a run that includes the step begins: starts, in the background,
    /// local work the step will need (hashing a big file), so that it is done when the step
    /// runs. Must not touch a host.
    fn warm_up(&self) {}

    /// What `desired` needs to know of the host, observed in one round trip, before `prepare`.
    /// A File probe of a path the step also writes stands as the executor's fact of that file
    /// (no second read), so `prepare` must never write a probed path.
    fn probes(&self, _cluster: &Cluster, _host: &Host) -> Vec<Probe> {
        Vec::new()
    }

    /// The inputs the hosts share, read once per run of the phase, with what each host showed.
    async fn prepare(
        &self,
        _ctx: &Ctx,
        _observed: &[(&Host, &Observed)],
    ) -> Result<Self::Shared, String> {
        Ok(Self::Shared::default())
    }

    /// The host's desired state (none for steps that act only through the API).
    fn desired(
        &self,
        _cluster: &Cluster,
        _host: &Host,
        _observed: &Observed,
        _shared: &Self::Shared,
    ) -> Result<Desired, String> {
        Ok(Desired::default())
    }

    /// After the actions are applied (never in a dry run): wait for health, or act through the
    /// API; what it changed and what the user should know.
    async fn after(
        &self,
        _ctx: &Ctx,
        _host: &Host,
        _applied: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        Ok(After::default())
    }

    /// In a dry run, in place of `after`: what it would change, where that can be known
    /// without changing anything (a server-side dry run of API objects).
    async fn dry_run(
        &self,
        _ctx: &Ctx,
        _host: &Host,
        _applied: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        Ok(After::default())
    }
}

/// What `desired` returns: the actions, and notes for the user (why a certificate is re-issued).
#[derive(Debug, Default)]
pub struct Desired {
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
}

impl From<Vec<Action>> for Desired {
    fn from(actions: Vec<Action>) -> Desired {
        Desired {
            actions,
            notes: Vec::new(),
        }
    }
}

/// What `after` is told: whether the executor changed anything, the actions, the shared inputs.
pub struct Applied<'a, S> {
    pub changed: bool,
    pub actions: &'a [Action],
    pub shared: &'a S,
}

#[derive(Debug, Default)]
pub struct After {
    pub changes: Vec<String>,
    pub notes: Vec<String>,
}

/// A step whose desired state is a function of the cluster and the host alone.
pub struct Pure(pub fn(&Cluster, &Host) -> Result<Vec<Action>, String>);

impl Step for Pure {
    type Shared = ();

    fn desired(&self, c: &Cluster, h: &Host, _: &Observed, _: &()) -> Result<Desired, String> {
        (self.0)(c, h).map(Desired::from)
    }
}

/// How far the run got before this phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub phases_run: usize,
    pub changes: usize,
}

/// A step as the runner sees it (any `Step`, whatever it shares). Its future is not `Send`:
/// the runner awaits phases one after the other and never spawns them.
#[async_trait::async_trait(?Send)]
pub trait Runnable: Send + Sync {
    /// `Step::warm_up`.
    fn warm_up(&self);

    /// Runs the step on its hosts among `hosts` (the whole inventory on join when it asks);
    /// None when it acts on none of them.
    async fn run(
        &self,
        ctx: &Ctx,
        path: &str,
        scope: &[Host],
        on_join: bool,
        progress: Progress,
    ) -> Option<Vec<HostOutcome>>;
}

#[async_trait::async_trait(?Send)]
impl<S: Step> Runnable for S {
    fn warm_up(&self) {
        Step::warm_up(self)
    }

    async fn run(
        &self,
        ctx: &Ctx,
        path: &str,
        scope: &[Host],
        on_join: bool,
        progress: Progress,
    ) -> Option<Vec<HostOutcome>> {
        let on = if on_join && self.every_node_on_join() {
            &ctx.cluster.hosts
        } else {
            scope
        };
        let targets: Vec<Host> = on
            .iter()
            .filter(|h| self.applies_to(&ctx.cluster, h))
            .cloned()
            .collect();
        if targets.is_empty() {
            return None;
        }
        if let Some(note) = self.skipped_when_nothing_changed()
            && progress.phases_run > 0
            && progress.changes == 0
        {
            return Some(
                fan_out(ctx, path, &targets, |h| async move {
                    let mut o = HostOutcome::ok(&h.name);
                    o.notes.push(note.to_string());
                    o
                })
                .await,
            );
        }
        let observed: Vec<Result<Observed, String>> =
            futures::future::join_all(targets.iter().map(|h| observe(ctx, self, h))).await;
        let seen: Vec<(&Host, &Observed)> = targets
            .iter()
            .zip(&observed)
            .filter_map(|(h, o)| o.as_ref().ok().map(|o| (h, o)))
            .collect();
        let shared = self.prepare(ctx, &seen).await;
        let shared = &shared;
        let observed = &observed;
        let targets = &targets;
        Some(if self.one_at_a_time() {
            super::fan_out_in_order(ctx, path, targets, |h| {
                on_host(ctx, self, h, targets, observed, shared)
            })
            .await
        } else {
            fan_out(ctx, path, targets, |h| {
                on_host(ctx, self, h, targets, observed, shared)
            })
            .await
        })
    }
}

/// The step on one of its targets, with what was observed there and what its hosts share.
async fn on_host<S: Step>(
    ctx: &Ctx,
    step: &S,
    host: &Host,
    targets: &[Host],
    observed: &[Result<Observed, String>],
    shared: &Result<S::Shared, String>,
) -> HostOutcome {
    let result = async {
        let i = targets
            .iter()
            .position(|t| t.name == host.name)
            .ok_or("internal: not a target")?;
        let observed = observed[i].as_ref().map_err(Clone::clone)?;
        let shared = shared.as_ref().map_err(Clone::clone)?;
        run_on(ctx, step, host, observed, shared).await
    }
    .await;
    result.unwrap_or_else(|e| HostOutcome::failed(&host.name, e))
}

async fn observe<S: Step>(ctx: &Ctx, step: &S, host: &Host) -> Result<Observed, String> {
    let probes = step.probes(&ctx.cluster, host);
    if probes.is_empty() {
        return Ok(Observed::default());
    }
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    probe::observe(&session, host, &probes).await
}

async fn run_on<S: Step>(
    ctx: &Ctx,
    step: &S,
    host: &Host,
    observed: &Observed,
    shared: &S::Shared,
) -> Result<HostOutcome, String> {
    let desired = step.desired(&ctx.cluster, host, observed, shared)?;
    // a file the step probed is known as the probe found it (nothing writes it in between)
    let known: Vec<_> = desired
        .actions
        .iter()
        .map(|a| match a {
            Action::File(f) => observed.fact(&f.path),
            _ => None,
        })
        .collect();
    let mut o = converge_knowing(ctx, host, &desired.actions, &known).await?;
    o.notes.extend(desired.notes);
    let applied = Applied {
        changed: !o.changes.is_empty(),
        actions: &desired.actions,
        shared,
    };
    let after = if ctx.dry_run() {
        step.dry_run(ctx, host, &applied).await?
    } else {
        step.after(ctx, host, &applied).await?
    };
    o.changes.extend(after.changes);
    o.notes.extend(after.notes);
    Ok(o)
}

/// Plans `actions` on `host` and applies them (or, in a dry run, describes them).
pub(crate) async fn converge(
    ctx: &Ctx,
    host: &Host,
    actions: &[Action],
) -> Result<HostOutcome, String> {
    converge_knowing(ctx, host, actions, &[]).await
}

/// `converge`, with the facts of some actions (by index) already read in this run.
async fn converge_knowing(
    ctx: &Ctx,
    host: &Host,
    actions: &[Action],
    known: &[Option<Fact>],
) -> Result<HostOutcome, String> {
    let mut o = HostOutcome::ok(&host.name);
    if actions.is_empty() {
        return Ok(o);
    }
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let plan = executor::plan_knowing(&session, actions, known)
        .await
        .map_err(|e| e.to_string())?;
    if ctx.dry_run() {
        o.changes = plan.changes.iter().map(|c| c.summary.clone()).collect();
        o.details = executor::describe(&session, actions, &plan)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        let applied = executor::apply(&session, actions, &plan)
            .await
            .map_err(|e| e.to_string())?;
        o.changes = applied.changes;
        o.bytes_uploaded = applied.bytes_uploaded;
    }
    Ok(o)
}

/// Whether the outcomes of a phase failed anywhere.
pub fn failed(outcomes: &[HostOutcome]) -> bool {
    outcomes.iter().any(|o| o.status == Status::Failed)
}
