//! The `addons` phase: the network add-on when the CNI runs as pods (Flannel, Calico, Cilium),
//! and CoreDNS (ServiceAccount, RBAC, Corefile, Deployment, the `kube-dns`
//! Service at the cluster's DNS address), applied through the API when its image can be had:
//! from the registry (upstream or a mirror), or from the bundle directory when it carries it.
//! When it cannot, the phase says so plainly and Service names will not resolve.

use super::step::{After, Applied, Step};
use super::{Phase, Work};
use crate::api::{apply_manifest, client};
use crate::cluster::{BundleSource, Cluster, Host};
use crate::render::render_typed;
use crate::run::Ctx;

pub fn phase() -> Phase {
    Phase {
        name: "addons",
        summary: "CoreDNS, when its image can be had (registry or bundle)",
        work: Work::Step(Box::new(Addons)),
        children: Vec::new(),
    }
}

struct Addons;

/// The CoreDNS image, or why there is none.
async fn coredns_image(ctx: &Ctx, host: &Host) -> Result<Result<String, String>, String> {
    let plan = ctx.bundle_plan().await?;
    if let BundleSource::Dir { path } = &ctx.cluster.bundle {
        return Ok(plan.bundle_image(host, "coredns")?.ok_or_else(|| {
            format!(
                "the bundle directory {} has no CoreDNS image (add its OCI archive as component coredns)",
                path.display()
            )
        }));
    }
    Ok(
        match crate::catalog::default_version("coredns", &ctx.cluster.version) {
            Some(v) => Ok(format!("registry.k8s.io/coredns/coredns:v{v}")),
            None => Err(format!(
                "the catalog has no CoreDNS release for Kubernetes {}",
                ctx.cluster.version
            )),
        },
    )
}

/// The CoreDNS manifest for this cluster.
pub fn coredns_manifest(cluster: &Cluster, image: &str) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct CoreDns<'a> {
        image: &'a str,
        dns_domain: &'a str,
        dns_ip: String,
    }
    render_typed(
        "coredns.yaml",
        &CoreDns {
            image,
            dns_domain: &cluster.dns_domain,
            dns_ip: cluster.dns_service_ip.to_string(),
        },
    )
}

impl Addons {
    /// The network add-on (when the CNI runs as pods), then CoreDNS when its image can be had.
    async fn apply(&self, ctx: &Ctx, host: &Host, dry_run: bool) -> Result<After, String> {
        let mut after = After::default();
        // a dry run of a cluster not made yet has no API to validate against: list the objects
        let client = match client(ctx, "admin").await {
            Ok(c) => Some(c),
            Err(why) if dry_run => {
                after.notes.push(format!(
                    "the manifests were not validated by the API server ({why}); a real run applies them once it serves"
                ));
                None
            }
            Err(why) => return Err(why),
        };
        let apply = |manifest: String| {
            let client = client.clone();
            async move {
                match client {
                    Some(c) => apply_manifest(&c, &manifest, dry_run).await,
                    None => crate::api::would_apply(&manifest),
                }
            }
        };
        let network = crate::cni::of(ctx.cluster.cni);
        if let Some(manifest) = network.manifest(&ctx.cluster)? {
            after.changes.extend(apply(manifest).await?);
            after.notes.push(format!(
                "{} applied: its pods pull their images from the registry (or its mirror); nodes turn Ready once it runs",
                network.name()
            ));
        }
        match coredns_image(ctx, host).await? {
            Ok(image) => {
                let manifest = coredns_manifest(&ctx.cluster, &image)?;
                after.changes.extend(apply(manifest).await?);
                after.notes.push(format!(
                    "CoreDNS {image} at {}",
                    ctx.cluster.dns_service_ip
                ));
            }
            Err(why) => after.notes.push(format!(
                "CoreDNS was not deployed: {why}. Service names (*.svc.{}) will not resolve until it is.",
                ctx.cluster.dns_domain
            )),
        }
        Ok(after)
    }
}

#[async_trait::async_trait]
impl Step for Addons {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        cluster.is_seed_control_plane(host)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        self.apply(ctx, host, false).await
    }

    /// A server-side dry run: the API server validates and admits every object, stores none.
    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        self.apply(ctx, host, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    fn parse<K: serde::de::DeserializeOwned>(doc: &str) -> Result<K, String> {
        serde_yaml::from_str(doc).map_err(|e| format!("the CoreDNS manifest: {e}"))
    }

    #[test]
    fn the_coredns_manifest_parses_and_serves_the_cluster_dns_address_and_domain()
    -> Result<(), String> {
        let cluster = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  networking: {serviceSubnet: 10.100.0.0/16, dnsDomain: corp.internal}\n  hosts:\n  - {name: n1, address: 192.168.7.20, roles: [control-plane]}\n",
        );
        let m = coredns_manifest(&cluster, "registry.k8s.io/coredns/coredns:v1.14.2")?;
        let docs: Vec<&str> = m.split("\n---\n").collect();
        assert_eq!(docs.len(), 6);
        let svc: Service = parse(docs[5])?;
        assert_eq!(
            svc.spec
                .ok_or("a Service without spec")?
                .cluster_ip
                .as_deref(),
            Some("10.100.0.10")
        );
        let cm: ConfigMap = parse(docs[3])?;
        assert!(
            cm.data.ok_or("a ConfigMap without data")?["Corefile"]
                .contains("kubernetes corp.internal in-addr.arpa")
        );
        let d: Deployment = parse(docs[4])?;
        let pod = d.spec.template.spec.ok_or("a pod template without spec")?;
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.k8s.io/coredns/coredns:v1.14.2")
        );
        let _: ServiceAccount = parse(docs[0])?;
        let _: ClusterRole = parse(docs[1])?;
        let _: ClusterRoleBinding = parse(docs[2])?;
        Ok(())
    }

    #[test]
    fn a_dry_run_without_an_api_lists_the_objects_it_would_apply() -> Result<(), String> {
        let cluster = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: n1, address: 192.168.7.20, roles: [control-plane]}\n",
        );
        let lines = crate::api::would_apply(&coredns_manifest(
            &cluster,
            "registry.k8s.io/coredns/coredns:v1.14.6",
        )?)?;
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(
            lines.contains(&"would apply Deployment coredns".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"would apply Service kube-dns".to_string()),
            "{lines:?}"
        );
        Ok(())
    }
}
