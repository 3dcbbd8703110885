//! What the bundle gives each host of the inventory, and the images among it: resolved once per
//! run, read by the phases that configure what those components run.

use super::manifest::{self, BundleDir};
use super::{HOST_IMAGES, Want, oci_image_ref, wants};
use crate::cluster::{BundleSource, Cluster, Host};
use std::collections::BTreeMap;

pub struct BundlePlan {
    pub wants: BTreeMap<String, Vec<Want>>,
    pub dir: Option<BundleDir>,
}

impl BundlePlan {
    pub fn resolve(cluster: &Cluster) -> Result<BundlePlan, String> {
        let dir = match &cluster.bundle {
            BundleSource::Dir { path } => Some(BundleDir::open(path)?),
            _ => None,
        };
        let wants = wants(cluster, &cluster.hosts, dir.as_ref())?;
        Ok(BundlePlan { wants, dir })
    }

    pub fn version(&self, host: &Host, component: &str) -> Option<String> {
        self.wants
            .get(&host.name)?
            .iter()
            .find(|w| w.component == component)
            .map(|w| w.version.clone())
    }

    /// The image archives the artifacts phase placed on the host, with their references.
    pub fn images(&self, host: &Host) -> Result<Vec<(String, String)>, String> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for w in self.wants.get(&host.name).into_iter().flatten() {
            for e in dir.entries(&w.component, &w.version, w.arch) {
                if e.kind() == manifest::Kind::Image {
                    let image_ref = oci_image_ref(&dir.path_of(e))?;
                    let on_host = format!("{HOST_IMAGES}/{}_{}.tar", w.component, w.version);
                    out.push((on_host, image_ref));
                }
            }
        }
        Ok(out)
    }

    /// The reference of the image the bundle directory holds as `component`, if it does.
    pub fn bundle_image(&self, host: &Host, component: &str) -> Result<Option<String>, String> {
        if let Some(v) = self.version(host, component)
            && let Some(dir) = &self.dir
            && let Some(e) = dir.entries(component, &v, host.arch).next()
        {
            return oci_image_ref(&dir.path_of(e)).map(Some);
        }
        Ok(None)
    }

    /// The pause image: the bundle's, else the registry's of the catalog.
    pub fn sandbox_image(&self, cluster: &Cluster, host: &Host) -> Result<String, String> {
        if let Some(image) = self.bundle_image(host, "pause")? {
            return Ok(image);
        }
        let v = crate::catalog::default_version("pause", &cluster.version)
            .unwrap_or_else(|| "3.10".into());
        Ok(format!("registry.k8s.io/pause:{v}"))
    }
}
