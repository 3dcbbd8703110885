//! Preflight: named checks, each an error or a warning, ignorable by name
//! (`--ignore-preflight-errors Swap,Port-6443` or `all`). Facts come from each host in one round
//! trip; the checks themselves are pure functions. Cluster-wide checks (duplicate hostnames and
//! machine-ids, clock skew) compare the hosts with each other.

use crate::cluster::{Cluster, Host, is_dns_subdomain};
use crate::output::{HostOutcome, Status};
use crate::run::Ctx;
use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

pub use checks::{Finding, Level, cluster_checks, host_checks, ports};
pub use facts::Facts;
use facts::gather;

mod checks;
mod facts;

fn ignored(ctx: &Ctx, check: &str) -> bool {
    ctx.options
        .ignore_preflight
        .iter()
        .any(|i| i.eq_ignore_ascii_case("all") || i.eq_ignore_ascii_case(check))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub async fn run(ctx: &Ctx, path: &str, hosts: &[Host]) -> Vec<HostOutcome> {
    use futures::StreamExt;
    let pb = ctx.out.phase_start(path, hosts.len());
    let started = std::time::Instant::now();
    // Facts first (in parallel), then every check, so cluster-wide checks see all hosts.
    let mut gathered: Vec<(usize, Result<Facts, String>)> = futures::stream::iter(
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| async move { (i, gather(ctx, h).await) }),
    )
    .buffer_unordered(ctx.options.concurrency)
    .collect()
    .await;
    gathered.sort_by_key(|(i, _)| *i);
    let ok_facts: Vec<(&Host, &Facts)> = gathered
        .iter()
        .filter_map(|(i, f)| f.as_ref().ok().map(|f| (&hosts[*i], f)))
        .collect();
    let mut findings: HashMap<String, Vec<Finding>> = HashMap::new();
    for (h, f) in &ok_facts {
        findings.insert(h.name.clone(), host_checks(&ctx.cluster, h, f));
    }
    for (name, f) in cluster_checks(&ok_facts) {
        findings.entry(name).or_default().push(f);
    }
    let outcomes: Vec<HostOutcome> = gathered
        .iter()
        .map(|(i, f)| {
            let h = &hosts[*i];
            let o = match f {
                Err(e) => HostOutcome::failed(&h.name, e.clone()),
                Ok(f) => {
                    let mut o = outcome(ctx, h, findings.remove(&h.name).unwrap_or_default());
                    o.seconds = f.seconds;
                    o
                }
            };
            ctx.out.host_done(path, &o, pb.as_ref());
            o
        })
        .collect();
    ctx.out
        .phase_done(path, &outcomes, started.elapsed().as_secs_f64(), pb);
    outcomes
}

fn outcome(ctx: &Ctx, host: &Host, findings: Vec<Finding>) -> HostOutcome {
    let mut o = HostOutcome::ok(&host.name);
    o.checks_only = true;
    let mut errors = Vec::new();
    for f in findings {
        match f.level {
            Level::Error if !ignored(ctx, &f.check) => {
                errors.push(format!("[{}] {}", f.check, f.message))
            }
            Level::Error => o
                .warnings
                .push(format!("[{}] {} (ignored)", f.check, f.message)),
            Level::Warning => o.warnings.push(format!("[{}] {}", f.check, f.message)),
        }
    }
    if !errors.is_empty() {
        errors.push(
            "to go on anyway: --ignore-preflight-errors=<check>[,<check>...] (or all)".into(),
        );
        o.status = Status::Failed;
        o.error = Some(errors.join("\n"));
    }
    o
}
