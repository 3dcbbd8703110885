//! `provision upgrade plan`: what runs (read over SSH and through the API, as `status` reads
//! it), what the inventory wants (its `kubernetesVersion` and the bundle's components for it),
//! and the plan between them (`plan`), printed as a table or JSON. Reads only.

pub mod apply;
pub mod chain;
pub mod deprecated;
pub mod plan;
mod prune;
mod rollback;
mod uncordon;

use crate::api;
use crate::output::Format;
use crate::run::Ctx;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use plan::{HostSeen, Plan, Seen, Wanted};
use std::collections::BTreeMap;

/// The components a plan compares, per host (those the host's roles run).
pub(super) const COMPARED: [&str; 8] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "kube-router",
];

/// The Nodes an upgrade's drain cordoned and nothing uncordoned yet (an interrupted run).
pub async fn cordoned_by_upgrade(ctx: &Ctx) -> Result<Vec<String>, String> {
    uncordon::cordoned_nodes(ctx).await
}

/// What runs: every host's versions, Node readiness, etcd's health, CoreDNS, the certificates.
async fn observe(ctx: &Ctx) -> Seen {
    let cluster = &ctx.cluster;
    let ready = crate::status::node_readiness(ctx).await.unwrap_or_default();
    let hosts = futures::future::join_all(
        cluster
            .hosts
            .iter()
            .map(|h| crate::status::host_status(ctx, h)),
    )
    .await;
    let etcd = futures::future::join_all(
        cluster
            .control_planes()
            .map(|h| crate::status::etcd_member(ctx, h)),
    )
    .await;
    let (rows, _) = crate::phases::expiration::rows(ctx).await;
    Seen {
        hosts: hosts
            .into_iter()
            .map(|h| HostSeen {
                control_plane: cluster.host(&h.name).is_some_and(|c| c.control_plane),
                ready: ready.get(&h.name).copied(),
                reachable: h.reachable,
                versions: h.versions,
                name: h.name,
            })
            .collect(),
        etcd_unhealthy: etcd
            .into_iter()
            .filter(|m| !m.healthy)
            .map(|m| (m.host, m.error))
            .collect(),
        coredns: coredns_version(ctx).await,
        certificates: rows
            .into_iter()
            .filter(|r| r.certificate != "super-admin.conf")
            .map(|r| (r.host, r.certificate, r.residual_seconds))
            .collect(),
    }
}

/// The tag of the CoreDNS Deployment's image (`v1.14.6` → 1.14.6).
async fn coredns_version(ctx: &Ctx) -> Option<String> {
    let client = api::client(ctx, "admin").await.ok()?;
    let d = Api::<Deployment>::namespaced(client, "kube-system")
        .get_opt("coredns")
        .await
        .ok()??;
    let image = d.spec.template.spec?.containers.first()?.image.clone()?;
    let tag = image.rsplit_once(':')?.1;
    Some(tag.trim_start_matches('v').to_string())
}

/// What the inventory wants of each host: the bundle's version of each compared component.
async fn wanted(ctx: &Ctx, batch: usize) -> Result<Wanted, String> {
    let bundle = ctx.bundle_plan().await?;
    let mut hosts = BTreeMap::new();
    for h in &ctx.cluster.hosts {
        let versions: BTreeMap<String, String> = COMPARED
            .iter()
            .filter_map(|c| bundle.version(h, c).map(|v| (c.to_string(), v)))
            .collect();
        hosts.insert(h.name.clone(), versions);
    }
    // from a bundle directory that carries its image, else the catalog's for the version
    let coredns = ctx
        .cluster
        .hosts
        .first()
        .and_then(|h| bundle.version(h, "coredns"))
        .or_else(|| crate::catalog::default_version("coredns", &ctx.cluster.version));
    Ok(Wanted {
        kubernetes: ctx.cluster.version,
        hosts,
        coredns,
        batch,
    })
}

/// The plan for this cluster, workers `max_unavailable` at a time. A version the bundle cannot
/// give is an error, unless the plan is refused already for what runs.
/// With `joined_only`, hosts that are not Nodes yet are left out (`provision apply` joins them
/// after the upgrade, at the new version).
/// Objects of API versions the target removes refuse it unless `ignore_deprecated`.
pub async fn plan_for(
    ctx: &Ctx,
    max_unavailable: &str,
    joined_only: bool,
    ignore_deprecated: bool,
) -> Result<Plan, String> {
    let workers = ctx
        .cluster
        .hosts
        .iter()
        .filter(|h| !h.control_plane)
        .count();
    let batch = plan::batch_size(max_unavailable, workers)?;
    let mut seen = observe(ctx).await;
    if joined_only {
        seen.hosts.retain(|h| h.ready.is_some());
    }
    match wanted(ctx, batch).await {
        Ok(w) => {
            let mut p = plan::plan(&seen, &w);
            // an upgrade starts from a cluster whose network works: verify's every row, run
            // only when there is an upgrade to make and nothing refused it already
            if !p.nothing_to_do() && p.refusals.is_empty() {
                p.refusals.extend(verify_refusal(ctx, joined_only).await);
            }
            // only a new minor stops serving API versions
            let new_minor = p
                .from
                .as_deref()
                .and_then(|f| crate::version::Version::parse(f).ok())
                .is_some_and(|f| f.minor < ctx.cluster.version.minor);
            if new_minor {
                let client = api::client(ctx, "admin").await?;
                p.removed_apis = deprecated::removed_by(&client, ctx.cluster.version).await?;
                if !ignore_deprecated {
                    p.refusals
                        .extend(deprecated::refusal(&p.removed_apis, ctx.cluster.version));
                }
            }
            Ok(p)
        }
        Err(e) => {
            // the refusals of what runs still stand; the bundle's own problem comes with them
            let bare = Wanted {
                kubernetes: ctx.cluster.version,
                hosts: BTreeMap::new(),
                coredns: None,
                batch,
            };
            let mut p = plan::plan(&seen, &bare);
            if p.refusals.is_empty() {
                return Err(e);
            }
            p.refusals.push(format!("the bundle: {e}"));
            Ok(p)
        }
    }
}

/// What verify covers: every host, or (`joined_only`) the Nodes so far.
pub(crate) fn verify_expects(joined_only: bool) -> crate::verify::Expect {
    if joined_only {
        crate::verify::Expect::Registered
    } else {
        crate::verify::Expect::All
    }
}

/// Why `verify` refuses the upgrade, if it does: its failing rows, named.
async fn verify_refusal(ctx: &Ctx, joined_only: bool) -> Option<String> {
    match crate::verify::run(ctx, verify_expects(joined_only)).await {
        Ok(report) if report.passed() => None,
        Ok(report) => {
            let failing: Vec<String> = report
                .failures()
                .map(|r| format!("{} {}: {}", r.check, r.subject, r.detail))
                .collect();
            Some(format!(
                "verify fails ({}): an upgrade starts from a cluster whose network works (`provision verify -i FILE` says why)",
                failing.join("; ")
            ))
        }
        Err(e) => Some(format!("verify could not run: {e}")),
    }
}

/// The plan as a table, or JSON.
pub fn print(cluster: &str, p: &Plan, format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(p).unwrap_or_default());
    } else {
        print!("{}", table(cluster, p));
    }
}

/// The plan as a table, with its refusals.
pub fn table(cluster: &str, p: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "upgrade plan for {cluster}: Kubernetes {} → {}",
        p.from.as_deref().unwrap_or("unknown"),
        p.to
    );
    if !p.chain.is_empty() {
        let _ = writeln!(
            s,
            "  a chain of one-minor upgrades: {}; this plan is its first step, each next one is planned once the one before passed verify",
            std::iter::once(p.from.as_deref().unwrap_or("unknown"))
                .chain(p.chain.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    if p.steps.is_empty() {
        let _ = writeln!(
            s,
            "  nothing to upgrade: every component runs what the inventory says"
        );
    } else {
        let _ = writeln!(
            s,
            "\n  {:<5} {:<20} {:<10} {:<24} {:<10} TO",
            "ORDER", "STAGE", "HOST", "COMPONENT", "FROM"
        );
        for st in &p.steps {
            let _ = writeln!(
                s,
                "  {:<5} {:<20} {:<10} {:<24} {:<10} {}",
                st.order, st.stage, st.host, st.component, st.from, st.to
            );
        }
    }
    if !p.renewals.is_empty() && !p.steps.is_empty() {
        let _ = writeln!(
            s,
            "\ncertificates renewed on the way (they expire within {} days):",
            crate::x509::RENEW_BEFORE_DAYS
        );
        for (host, cert, days) in &p.renewals {
            let _ = writeln!(s, "  {host}: {cert} ({days} days left)");
        }
    }
    if !p.removed_apis.is_empty() {
        let _ = writeln!(
            s,
            "\nobjects of API versions Kubernetes {} no longer serves:",
            p.to
        );
        for r in &p.removed_apis {
            let _ = writeln!(
                s,
                "  {} {} (unavailable in {}): {}",
                r.group_version,
                r.resource,
                r.unavailable_in,
                r.objects.join(", ")
            );
        }
    }
    if !p.refusals.is_empty() {
        let _ = writeln!(s, "\nrefused, before anything changes:");
        for r in &p.refusals {
            let _ = writeln!(s, "  - {r}");
        }
    }
    s
}
