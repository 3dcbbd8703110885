//! Upgrades over several minors (`--chain`): Kubernetes goes up one minor at a time, so a chain
//! is a whole upgrade per minor (the catalog's release of each minor between), each verified
//! before the next one starts.

use crate::catalog;
use crate::run::Ctx;
use crate::version::Version;

/// The versions an upgrade from `oldest` (the oldest Kubernetes component any host runs) to
/// `to` goes through, `to` last: just `to` when it is at most one minor up.
pub fn versions(oldest: Version, to: Version) -> Result<Vec<Version>, String> {
    if oldest.major != to.major || oldest.minor + 1 >= to.minor {
        return Ok(vec![to]);
    }
    let mut chain = Vec::new();
    for minor in oldest.minor + 1..to.minor {
        let release = catalog::release(minor).ok_or_else(|| {
            format!(
                "the catalog has no Kubernetes 1.{minor} release to go through from {oldest} to {to}: set kubernetesVersion to a 1.{minor} release, upgrade, then to {to}"
            )
        })?;
        chain.push(Version::parse(release.kubernetes)?);
    }
    chain.push(to);
    Ok(chain)
}

/// `1.35.8 → 1.36.4 → 1.37.2`.
pub fn arrows(from: Option<Version>, chain: &[Version]) -> String {
    from.iter()
        .chain(chain)
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The oldest Kubernetes component (API server, controller manager, scheduler, kubelet,
/// kube-proxy) any host runs, as the units run it; None when no host reports one.
pub async fn oldest_running(ctx: &Ctx) -> Option<Version> {
    let hosts = futures::future::join_all(
        ctx.cluster
            .hosts
            .iter()
            .map(|h| crate::status::host_status(ctx, h)),
    )
    .await;
    hosts
        .iter()
        .flat_map(|h| {
            super::plan::KUBERNETES
                .iter()
                .filter_map(|c| h.versions.get(*c))
        })
        .filter_map(|v| Version::parse(v).ok())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Result<Version, String> {
        Version::parse(s)
    }

    #[test]
    fn a_chain_goes_through_the_catalog_release_of_every_minor_between()
    -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            versions(v("1.35.8")?, v("1.37.2")?)?,
            [v("1.36.4")?, v("1.37.2")?]
        );
        assert_eq!(
            arrows(Some(v("1.35.8")?), &[v("1.36.4")?, v("1.37.2")?]),
            "1.35.8 → 1.36.4 → 1.37.2"
        );
        Ok(())
    }

    #[test]
    fn one_minor_or_less_is_no_chain() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(versions(v("1.36.4")?, v("1.37.2")?)?, [v("1.37.2")?]);
        assert_eq!(versions(v("1.37.0")?, v("1.37.2")?)?, [v("1.37.2")?]);
        // a downgrade is the plan's to refuse
        assert_eq!(versions(v("1.37.2")?, v("1.36.4")?)?, [v("1.36.4")?]);
        Ok(())
    }

    #[test]
    fn a_minor_the_catalog_lacks_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let e = versions(v("1.33.1")?, v("1.36.4")?).unwrap_err();
        assert!(e.contains("no Kubernetes 1.34 release"), "{e}");
        Ok(())
    }
}
