//! What a run settles about the running cluster before its first phase, so that every phase
//! sees the cluster as it is and not only as the inventory's order suggests: which control
//! plane to read the cluster's material from and join through (`seed`), and the pod CIDRs the
//! cluster's Nodes already hold (`pod_cidrs`). Removing a host from the inventory, or adding
//! one in the middle, then moves nothing that runs.

pub mod pod_cidrs;
pub mod seed;

use crate::run::Ctx;

/// Chooses the seed among the control planes not `leaving`, then keeps the Nodes' pod CIDRs.
pub async fn settle(ctx: &mut Ctx, leaving: &[String]) -> Result<(), String> {
    seed::choose(ctx, leaving).await;
    pod_cidrs::keep(ctx).await
}
