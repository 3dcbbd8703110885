//! `provision reset`: take hosts out of Kubernetes. Hosts that leave a cluster that stays are
//! drained first, lose their etcd member, and their Node is deleted last (kubeadm's order:
//! drain, reset the host, delete the node). Every reset host loses what provision put there:
//! units stopped, disabled and removed; pods, their mounts and network namespaces; the overlay
//! and CNI links and the packet-filter rules of kube-proxy and the CNI; configuration, state,
//! certificates and the bundle's files. Audit logs under /var/log/kubernetes stay, as they
//! do with kubeadm. Everything is an action, so a dry run lists it and a second run changes
//! nothing.

use super::step::{self, Applied, Desired, Pure, Step};
use super::{Phase, Work, control_plane, etcd, host, kubelet};
use crate::bundle;
use crate::cluster::{Cluster, Host};
use crate::cni::{self, Cni};
use crate::host::Leftovers;
use crate::host::probe::Observed;
use crate::host::{Action, UnitSpec};
use crate::paths;
use crate::run::Ctx;
use crate::runtime::{self, Runtime};
use crate::ssh::shell_quote;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};

pub use cleanup::{cleanup, cleanup_of};
pub use drain::{CORDONED_BY, Drain};

mod cleanup;
mod drain;
mod quorum;

/// The reset phases. `cluster_stays`: the hosts leave a cluster that goes on (drain, etcd
/// member, Node); otherwise the whole cluster goes.
pub fn tree(cluster_stays: bool) -> Vec<Phase> {
    vec![
        Phase::leaf(
            "etcd-quorum",
            "refuse to take control planes away when etcd would lose its quorum (when the cluster stays)",
            Work::Step(Box::new(quorum::EtcdQuorum { cluster_stays })),
        ),
        Phase::leaf(
            "drain",
            "cordon each leaving node and evict its pods (when the cluster stays)",
            Work::Step(Box::new(Drain {
                cluster_stays,
                wait: drain::DRAIN_WAIT,
                mark: false,
                force: false,
            })),
        ),
        Phase::leaf(
            "remove-etcd-member",
            "take a leaving control plane's member out of etcd (when the cluster stays)",
            Work::Step(Box::new(RemoveEtcdMember { cluster_stays })),
        ),
        Phase::leaf(
            "local-kubeconfig",
            "remove the operator's admin kubeconfig of this cluster (when the cluster goes)",
            Work::Step(Box::new(ForgetKubeconfig { cluster_stays })),
        ),
        Phase::leaf(
            "cleanup",
            "stop and remove everything provision installed on the host",
            Work::Step(Box::new(Pure(cleanup))),
        ),
        Phase::leaf(
            "delete-node",
            "delete each leaving node's Node object (when the cluster stays)",
            Work::Step(Box::new(DeleteNode { cluster_stays })),
        ),
    ]
}

/// A leaving control plane's etcd member is removed through the etcd of the seed control plane
/// (chosen among the control planes that stay), with the leaving host's own healthcheck-client
/// certificate.
struct RemoveEtcdMember {
    cluster_stays: bool,
}

#[async_trait::async_trait]
impl Step for RemoveEtcdMember {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, host: &Host) -> bool {
        self.cluster_stays && host.control_plane
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        _: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        let first = cluster.seed_control_plane().ok_or("no control plane")?;
        let at = etcd::url(&first.address, 2379);
        let name = shell_quote(&host.name);
        let list = etcd::etcdctl_at(&at, "member list");
        Ok(vec![Action::Exec {
            label: format!("remove etcd member {}", host.name),
            cmd: format!(
                "id=$({list} | awk -F', ' -v n={name} '$3 == n {{print $1}}'); [ -z \"$id\" ] || {}",
                etcd::etcdctl_at(&at, "member remove \"$id\"")
            ),
            // without its client certificate the host was cleaned up already, which happens only
            // after the member was removed; a failing list is not "done"
            unless: format!(
                "[ ! -f {key} ] || {{ out=$({list}) && ! printf '%s\\n' \"$out\" | grep -qF {member}; }}",
                key = etcd::HEALTHCHECK_KEY,
                member = shell_quote(&format!(", {}, ", host.name)),
            ),
        }]
        .into())
    }
}

/// When the whole cluster goes, the admin kubeconfig written beside the inventory goes too, if
/// it belongs to this cluster (same CA); a file of another cluster is left alone.
struct ForgetKubeconfig {
    cluster_stays: bool,
}

impl ForgetKubeconfig {
    /// The local kubeconfig, when it is this cluster's.
    async fn ours(&self, ctx: &Ctx) -> Result<Option<std::path::PathBuf>, String> {
        let Some(path) = &ctx.options.local_kubeconfig else {
            return Ok(None);
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        // a cluster without a CA (or one that cannot be read) owns no kubeconfig: keep the file
        let Ok(ca) = ctx.ca(crate::pki::CaKind::Kubernetes, false).await else {
            return Ok(None);
        };
        let ours = crate::pki::kubeconfig::parse(&text)
            .is_ok_and(|k| k.ca_pem.trim() == ca.cert_pem.trim());
        Ok(ours.then(|| path.clone()))
    }
}

#[async_trait::async_trait]
impl Step for ForgetKubeconfig {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        !self.cluster_stays && cluster.is_seed_control_plane(host)
    }

    async fn dry_run(
        &self,
        ctx: &Ctx,
        _: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        if let Some(p) = self.ours(ctx).await? {
            after.changes.push(format!("would remove {}", p.display()));
        }
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        _: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        if let Some(p) = self.ours(ctx).await? {
            std::fs::remove_file(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
            after.changes.push(format!("remove {}", p.display()));
        }
        Ok(after)
    }
}

/// The leaving node's Node object, deleted once the host no longer runs a kubelet.
struct DeleteNode {
    cluster_stays: bool,
}

#[async_trait::async_trait]
impl Step for DeleteNode {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, _: &Host) -> bool {
        self.cluster_stays
    }

    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let nodes: Api<Node> = Api::all(crate::api::client(ctx, "admin").await?);
        let mut after = step::After::default();
        if nodes
            .get_opt(&host.name)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            after
                .changes
                .push(format!("would delete Node {}", host.name));
        }
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let nodes: Api<Node> = Api::all(crate::api::client(ctx, "admin").await?);
        let mut after = step::After::default();
        match nodes.delete(&host.name, &DeleteParams::default()).await {
            Ok(_) => after.changes.push(format!("delete Node {}", host.name)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("deleting Node {}: {e}", host.name)),
        }
        Ok(after)
    }
}
