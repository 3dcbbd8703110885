//! The `artifacts` phase: every host gets the components its roles need, from the bundle, into
//! versioned directories behind symlinks. A file crosses the network only when the host's copy
//! has another digest; hosts are served in parallel (bounded by --concurrency).

use super::fan_out;
use super::step::converge;
use crate::bundle::{self, Want, manifest::BundleDir};
use crate::cluster::{BundleSource, Host};
use crate::output::HostOutcome;
use crate::run::Ctx;
use std::collections::{BTreeMap, BTreeSet};

/// What an artifacts phase puts in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ship {
    /// Every component's files, then the symlinks that make them current.
    All,
    /// The files only: a new version waits beside the running one (an upgrade's first step).
    FilesOnly,
    /// These components' files and symlinks (an upgrade switching a host's control plane).
    Components(&'static [&'static str]),
}

pub async fn run(ctx: &Ctx, path: &str, hosts: &[Host], what: Ship) -> Vec<HostOutcome> {
    let prepared = prepare(ctx, hosts).await.map(|(mut wants, p)| {
        if let Ship::Components(only) = what {
            for list in wants.values_mut() {
                list.retain(|w| only.contains(&w.component.as_str()));
            }
        }
        (wants, p)
    });
    fan_out(ctx, path, hosts, |h| {
        let prepared = &prepared;
        async move {
            match prepared {
                Ok((wants, p)) => {
                    ship(
                        ctx,
                        h,
                        wants.get(&h.name).map(Vec::as_slice).unwrap_or_default(),
                        p,
                        what,
                    )
                    .await
                }
                Err(e) => HostOutcome::failed(&h.name, e.clone()),
            }
        }
    })
    .await
}

type Wants = BTreeMap<String, Vec<Want>>;

/// Resolves what each host needs and makes it available locally (fetching what the cache lacks).
async fn prepare(ctx: &Ctx, hosts: &[Host]) -> Result<(Wants, bundle::Prepared), String> {
    let cluster = &ctx.cluster;
    let dir = match &cluster.bundle {
        BundleSource::Dir { path } => Some(BundleDir::open(path)?),
        _ => None,
    };
    let wants = bundle::wants(cluster, hosts, dir.as_ref())?;
    let all: BTreeSet<Want> = wants.values().flatten().cloned().collect();
    let prepared = bundle::prepare(cluster, ctx.options.lock_file.as_deref(), &all).await?;
    if !prepared.newly_locked.is_empty() {
        ctx.out.note(&format!(
            "recorded the published digests of {} in {}",
            prepared.newly_locked.join(", "),
            ctx.options
                .lock_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    }
    Ok((wants, prepared))
}

async fn ship(
    ctx: &Ctx,
    host: &Host,
    wants: &[Want],
    prepared: &bundle::Prepared,
    what: Ship,
) -> HostOutcome {
    let result = async {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let machine = session.run("uname -m").await.map_err(|e| e.to_string())?;
        if crate::inventory::Arch::parse(machine.trim()) != Some(host.arch) {
            return Err(format!(
                "the host is {} but the inventory says arch: {}; set its arch to match",
                machine.trim(),
                host.arch
            ));
        }
        let mut actions = bundle::host_actions(wants, prepared);
        if what == Ship::FilesOnly {
            actions.retain(|a| !matches!(a, crate::host::Action::Symlink { .. }));
        }
        let mut o = converge(ctx, host, &actions).await?;
        if !o.changes.is_empty() || ctx.out.verbose {
            let names: Vec<String> = wants
                .iter()
                .map(|w| format!("{} {}", w.component, w.version))
                .collect();
            o.notes.push(format!("components: {}", names.join(", ")));
        }
        Ok::<_, String>(o)
    }
    .await;
    result.unwrap_or_else(|e| HostOutcome::failed(&host.name, e))
}
