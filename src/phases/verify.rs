//! The `verify` phase, last of `init` and `join`: the checks of `provision verify` on the nodes
//! registered so far; a failed row fails the phase with its cause. It runs when the run changed
//! something, or alone (`init phase verify`).

use super::step::{After, Applied, Step};
use super::{Phase, Work};
use crate::cluster::{Cluster, Host};
use crate::run::Ctx;
use crate::verify::report::Outcome;
use crate::verify::{self, Expect};

pub fn phase() -> Phase {
    Phase {
        name: "verify",
        summary: "pod networking end to end: pod to pod, node to pod, Services, DNS, policies",
        work: Work::Step(Box::new(Verify)),
        children: Vec::new(),
    }
}

struct Verify;

#[async_trait::async_trait]
impl Step for Verify {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        cluster.is_seed_control_plane(host)
    }

    /// On `join`, it runs once from the seed control plane, across every node.
    fn every_node_on_join(&self) -> bool {
        true
    }

    /// A re-run that changed nothing leaves the cluster as the last verify saw it.
    fn skipped_when_nothing_changed(&self) -> Option<&'static str> {
        Some("verify: not run, nothing changed (`provision verify -i FILE` checks anyway)")
    }

    async fn after(
        &self,
        ctx: &Ctx,
        _host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        let report = verify::run(ctx, Expect::Registered).await?;
        if !report.passed() {
            let mut text = format!("verify: {}", report.summary());
            for r in report.failures() {
                text.push_str(&format!("\n  {} {}: {}", r.check, r.subject, r.detail));
                if let Some(c) = &r.cause {
                    text.push_str(&format!("\n    likely cause: {c}"));
                }
            }
            text.push_str("\n`provision verify -i FILE` prints every row");
            return Err(text);
        }
        let mut notes = vec![format!("verify: {}", report.summary())];
        let mut seen = std::collections::BTreeSet::new();
        for r in &report.rows {
            if matches!(r.outcome, Outcome::Skipped | Outcome::NotEnforced)
                && seen.insert(r.check.clone())
            {
                notes.push(format!("{}: {}", r.check, r.detail));
            }
        }
        Ok(After {
            changes: Vec::new(),
            notes,
        })
    }
}
