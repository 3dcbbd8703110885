//! The `addons` phase: CoreDNS (ServiceAccount, RBAC, Corefile, Deployment, the `kube-dns`
//! Service at the cluster's DNS address), applied through the API when its image can be had:
//! from the registry (upstream or a mirror), or from the bundle directory when it carries it.
//! When it cannot, the phase says so plainly and Service names will not resolve.

use super::api::{client, ensure};
use super::step::{self, After, Step};
use super::{Ctx, Phase, Work, certs};
use crate::cluster::{BundleSource, Host};
use crate::host::Action;
use crate::render::render;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;

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
    let plan = step::bundle_plan(ctx).await?;
    if let BundleSource::Dir { path } = &ctx.cluster.bundle {
        return Ok(plan.bundle_image(host, "coredns")?.ok_or_else(|| {
            format!(
                "the bundle directory {} has no CoreDNS image (add its OCI archive as component coredns)",
                path.display()
            )
        }));
    }
    Ok(
        match crate::bundle::catalog::default_version("coredns", &ctx.cluster.version) {
            Some(v) => Ok(format!("registry.k8s.io/coredns/coredns:v{v}")),
            None => Err(format!(
                "the catalog has no CoreDNS release for Kubernetes {}",
                ctx.cluster.version
            )),
        },
    )
}

/// The CoreDNS manifest for this cluster.
pub fn coredns_manifest(ctx: &Ctx, image: &str) -> String {
    let mut t = tera::Context::new();
    t.insert("image", image);
    t.insert("dns_domain", &ctx.cluster.dns_domain);
    t.insert("dns_ip", &ctx.cluster.dns_service_ip.to_string());
    render("coredns.yaml", &t)
}

fn parse<K: serde::de::DeserializeOwned>(doc: &str) -> Result<K, String> {
    serde_yaml::from_str(doc).map_err(|e| format!("the CoreDNS manifest: {e}"))
}

#[async_trait::async_trait]
impl Step for Addons {
    fn applies_to(&self, ctx: &Ctx, host: &Host) -> bool {
        certs::first_control_plane(ctx).is_some_and(|f| f.name == host.name)
    }

    async fn desired(&self, _ctx: &Ctx, _host: &Host) -> Result<Vec<Action>, String> {
        Ok(Vec::new())
    }

    async fn after(&self, ctx: &Ctx, host: &Host, _changed: bool) -> Result<After, String> {
        let image = match coredns_image(ctx, host).await? {
            Ok(image) => image,
            Err(why) => {
                return Ok(After {
                    changes: Vec::new(),
                    notes: vec![format!(
                        "CoreDNS was not deployed: {why}. Service names (*.svc.{}) will not resolve until it is.",
                        ctx.cluster.dns_domain
                    )],
                });
            }
        };
        let client = client(ctx, "admin").await?;
        let manifest = coredns_manifest(ctx, &image);
        let mut changes = Vec::new();
        for doc in manifest.split("\n---\n") {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or_default()
                .trim();
            let ns = "kube-system";
            let change = match kind {
                "ServiceAccount" => {
                    ensure(
                        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
                        &parse(doc)?,
                    )
                    .await?
                }
                "ClusterRole" => {
                    ensure(&Api::<ClusterRole>::all(client.clone()), &parse(doc)?).await?
                }
                "ClusterRoleBinding" => {
                    ensure(
                        &Api::<ClusterRoleBinding>::all(client.clone()),
                        &parse(doc)?,
                    )
                    .await?
                }
                "ConfigMap" => {
                    ensure(
                        &Api::<ConfigMap>::namespaced(client.clone(), ns),
                        &parse(doc)?,
                    )
                    .await?
                }
                "Deployment" => {
                    ensure(
                        &Api::<Deployment>::namespaced(client.clone(), ns),
                        &parse(doc)?,
                    )
                    .await?
                }
                "Service" => {
                    ensure(
                        &Api::<Service>::namespaced(client.clone(), ns),
                        &parse(doc)?,
                    )
                    .await?
                }
                other => {
                    return Err(format!(
                        "the CoreDNS manifest has an unexpected kind {other:?}"
                    ));
                }
            };
            changes.extend(change);
        }
        Ok(After {
            changes,
            notes: vec![format!("CoreDNS {image} at {}", ctx.cluster.dns_service_ip)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, Reporter};
    use std::sync::Arc;

    #[test]
    fn the_coredns_manifest_parses_and_serves_the_cluster_dns_address_and_domain() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("i.yaml");
        std::fs::write(&file, "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  networking: {serviceSubnet: 10.100.0.0/16, dnsDomain: corp.internal}\n  hosts:\n  - {name: n1, address: 192.168.7.20, roles: [control-plane]}\n").unwrap();
        let loaded = crate::inventory::load(&file).unwrap();
        let (cluster, _) = crate::cluster::resolve(&loaded).unwrap();
        let ctx = Ctx::new(
            Arc::new(cluster),
            true,
            1,
            Vec::new(),
            crate::ssh::HostKeyPolicy::Strict,
            Reporter::new(Format::Json, false, true),
        );
        let m = coredns_manifest(&ctx, "registry.k8s.io/coredns/coredns:v1.14.2");
        let docs: Vec<&str> = m.split("\n---\n").collect();
        assert_eq!(docs.len(), 6);
        let svc: Service = parse(docs[5]).unwrap();
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.100.0.10"));
        let cm: ConfigMap = parse(docs[3]).unwrap();
        assert!(cm.data.unwrap()["Corefile"].contains("kubernetes corp.internal in-addr.arpa"));
        let d: Deployment = parse(docs[4]).unwrap();
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.k8s.io/coredns/coredns:v1.14.2")
        );
        let _: ServiceAccount = parse(docs[0]).unwrap();
        let _: ClusterRole = parse(docs[1]).unwrap();
        let _: ClusterRoleBinding = parse(docs[2]).unwrap();
    }
}
