//! The `runtime` phase: the cluster's container runtime (`crate::runtime`) with the bundle's
//! sandbox image and image archives, then a wait until its CRI answers.

use super::Phase;
use super::step::{After, Applied, Desired, Step};
use crate::bundle::plan::BundlePlan;
use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::run::Ctx;
use crate::runtime::{self, Images};
use crate::systemd;
use std::sync::Arc;

pub fn phase() -> Phase {
    Phase::step(
        "runtime",
        "containerd (CRI, unit, crictl, the bundle's images) or CRI-O",
        Runtime,
    )
}

pub(crate) struct Runtime;

#[async_trait::async_trait]
impl Step for Runtime {
    type Shared = Option<Arc<BundlePlan>>;

    fn probes(&self, cluster: &Cluster, _: &Host) -> Vec<Probe> {
        runtime::of(cluster.runtime).probes()
    }

    async fn prepare(
        &self,
        ctx: &Ctx,
        _: &[(&Host, &Observed)],
    ) -> Result<Option<Arc<BundlePlan>>, String> {
        ctx.bundle_plan().await.map(Some)
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        plan: &Option<Arc<BundlePlan>>,
    ) -> Result<Desired, String> {
        let plan = plan.as_deref().ok_or("internal: no bundle plan")?;
        let images = Images {
            sandbox: plan.sandbox_image(cluster, host)?,
            archives: plan.images(host)?,
        };
        runtime::of(cluster.runtime)
            .actions(cluster, host, observed, &images)
            .map(Desired::from)
    }

    /// The CRI must answer: the kubelet talks to nothing else.
    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        let rt = runtime::of(ctx.cluster.runtime);
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        systemd::wait_or_journal(&session, &rt.health_check(), None, rt.service(), 15)
            .await
            .map_err(|why| {
                format!(
                    "{}'s CRI is not serving on {}:\n{why}check {} and `journalctl -u {}`",
                    rt.service(),
                    rt.socket(),
                    rt.config(),
                    rt.service()
                )
            })?;
        Ok(After::default())
    }
}
