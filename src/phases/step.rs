//! Phases whose desired state needs the run's context (host conditions, the bundle, the API):
//! `desired` computes the actions, the executor applies them, `after` waits for health.

use super::Ctx;
use crate::bundle::{self, Want, manifest::BundleDir};
use crate::cluster::{BundleSource, Host};
use crate::host::Action;
use std::collections::BTreeMap;
use std::sync::Arc;

#[async_trait::async_trait]
pub trait Step: Send + Sync {
    /// Whether the step acts on this host of the command's scope.
    fn applies_to(&self, _ctx: &Ctx, _host: &Host) -> bool {
        true
    }

    /// On `join`, act on every node of the inventory, not only the joining ones.
    fn every_node_on_join(&self) -> bool {
        false
    }

    /// Hosts one at a time (e.g. etcd members join a cluster one by one).
    fn one_at_a_time(&self) -> bool {
        false
    }

    /// The host's desired state (none for steps that act only through the API).
    async fn desired(&self, _ctx: &Ctx, _host: &Host) -> Result<Vec<Action>, String> {
        Ok(Vec::new())
    }

    /// After the actions are applied (never in a dry run): wait for health, or act through the
    /// API; what it changed and what the user should know.
    async fn after(&self, _ctx: &Ctx, _host: &Host, _changed: bool) -> Result<After, String> {
        Ok(After::default())
    }

    /// In a dry run, in place of `after`: what it would change, where that can be known
    /// without changing anything (a server-side dry run of API objects).
    async fn dry_run(&self, _ctx: &Ctx, _host: &Host) -> Result<After, String> {
        Ok(After::default())
    }
}

#[derive(Debug, Default)]
pub struct After {
    pub changes: Vec<String>,
    pub notes: Vec<String>,
}

/// What a host can and cannot do, where that changes the configuration (real hosts share some
/// limits of containers: read-only conntrack sysctls, no CAP_SYS_RESOURCE).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions {
    /// A process may lower its oom_score_adj (runc sets -998 on pause containers).
    pub can_lower_oom_score: bool,
    /// nf_conntrack_max can be written (it is global, read-only outside the initial netns).
    pub conntrack_writable: bool,
    pub swap_on: bool,
    pub has_nft: bool,
    pub cgroup_v1: bool,
}

const CONDITIONS_SCRIPT: &str = r#"
yes_no() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
echo "oom=$(yes_no sh -c 'echo -999 > /proc/self/oom_score_adj')"
echo "conntrack=$(yes_no sh -c 'cat /proc/sys/net/netfilter/nf_conntrack_max > /proc/sys/net/netfilter/nf_conntrack_max')"
echo "swap=$(yes_no test "$(wc -l < /proc/swaps)" -gt 1)"
echo "nft=$(yes_no command -v nft)"
echo "cgroup1=$(yes_no test "$(stat -fc %T /sys/fs/cgroup)" = tmpfs)"
"#;

pub async fn conditions(ctx: &Ctx, host: &Host) -> Result<Conditions, String> {
    if let Some(c) = ctx.conditions.lock().await.get(&host.name) {
        return Ok(*c);
    }
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let out = session
        .run(CONDITIONS_SCRIPT)
        .await
        .map_err(|e| e.to_string())?;
    let yes = |k: &str| out.lines().any(|l| l == format!("{k}=yes"));
    let c = Conditions {
        can_lower_oom_score: yes("oom"),
        conntrack_writable: yes("conntrack"),
        swap_on: yes("swap"),
        has_nft: yes("nft"),
        cgroup_v1: yes("cgroup1"),
    };
    ctx.conditions.lock().await.insert(host.name.clone(), c);
    Ok(c)
}

/// What the bundle gives each host of the inventory, and the images among it.
pub struct BundlePlan {
    pub wants: BTreeMap<String, Vec<Want>>,
    pub dir: Option<BundleDir>,
}

impl BundlePlan {
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
                if e.kind() == bundle::manifest::Kind::Image {
                    let image_ref = bundle::oci_image_ref(&dir.path_of(e))?;
                    let on_host =
                        format!("{}/{}_{}.tar", bundle::HOST_IMAGES, w.component, w.version);
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
            return bundle::oci_image_ref(&dir.path_of(e)).map(Some);
        }
        Ok(None)
    }

    /// The pause image: the bundle's, else the registry's of the catalog.
    pub fn sandbox_image(&self, ctx: &Ctx, host: &Host) -> Result<String, String> {
        if let Some(image) = self.bundle_image(host, "pause")? {
            return Ok(image);
        }
        let v = crate::catalog::default_version("pause", &ctx.cluster.version)
            .unwrap_or_else(|| "3.10".into());
        Ok(format!("registry.k8s.io/pause:{v}"))
    }
}

pub async fn bundle_plan(ctx: &Ctx) -> Result<Arc<BundlePlan>, String> {
    ctx.bundle_plan
        .get_or_init(|| async {
            let cluster = &ctx.cluster;
            let dir = match &cluster.bundle {
                BundleSource::Dir { path } => Some(BundleDir::open(path)?),
                _ => None,
            };
            let wants = bundle::wants(cluster, &cluster.hosts, dir.as_ref())?;
            Ok(Arc::new(BundlePlan { wants, dir }))
        })
        .await
        .clone()
}
