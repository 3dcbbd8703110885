//! The `certs` and `kubeconfig` phases: kubeadm's PKI on every control plane in scope.
//!
//! The CAs and the service-account key live on every control plane. A run reads them from its
//! seed control plane (`crate::settle::seed`; into memory, never onto the operator's disk) or, when
//! absent, creates them in their own phase and writes them there first. A leaf or kubeconfig already on a host is kept when it is compliant and
//! replaced, with the reason shown, when it is not.

use super::step::{After, Applied, Desired, Step};
use super::{Phase, Work, local_kubeconfig};
use crate::cluster::{Cluster, Host};
use crate::host::Action;
use crate::host::probe::{Observed, Probe};
use crate::paths::pki as path;
use crate::pki::kubeconfig::{self, KubeconfigKind};
use crate::pki::{Ca, CaKind, Leaf};
use crate::run::Ctx;
use std::collections::BTreeSet;

/// One thing the PKI phases install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Ca(CaKind),
    ServiceAccount,
    Leaf(Leaf),
    Kubeconfig(KubeconfigKind),
}

impl Item {
    pub fn name(self) -> &'static str {
        match self {
            Item::Ca(k) => k.name(),
            Item::ServiceAccount => "sa",
            Item::Leaf(l) => l.name(),
            Item::Kubeconfig(k) => k.name(),
        }
    }

    pub fn applies_to(self, cluster: &Cluster, host: &Host) -> bool {
        match self {
            // cluster-admin break-glass credentials exist once, on the seed control plane
            Item::Kubeconfig(KubeconfigKind::SuperAdmin) => cluster.is_seed_control_plane(host),
            // kube-proxy runs on every node
            Item::Kubeconfig(KubeconfigKind::KubeProxy) => true,
            _ => host.control_plane,
        }
    }

    /// The files of the item on a host.
    fn paths(self) -> Vec<String> {
        match self {
            Item::Ca(k) => vec![path(k.base(), "crt"), path(k.base(), "key")],
            Item::ServiceAccount => vec![path("sa", "key"), path("sa", "pub")],
            Item::Leaf(l) => vec![path(l.base(), "crt"), path(l.base(), "key")],
            Item::Kubeconfig(k) => vec![k.path()],
        }
    }
}

fn pki_phase(name: &'static str, summary: &'static str, item: Item) -> Phase {
    Phase::step(name, summary, Pki(item))
}

/// In kubeadm's order: each CA before the leaves it signs.
pub fn certs_phase() -> Phase {
    let leaf = |l: Leaf, summary| pki_phase(l.name(), summary, Item::Leaf(l));
    let ca = |k: CaKind, summary| pki_phase(k.name(), summary, Item::Ca(k));
    Phase {
        name: "certs",
        summary: "the cluster PKI in /etc/kubernetes/pki (kubeadm's layout)",
        work: Work::Group,
        children: vec![
            ca(
                CaKind::Kubernetes,
                "the cluster CA (created once, then reused)",
            ),
            leaf(Leaf::Apiserver, "serving certificate of kube-apiserver"),
            leaf(
                Leaf::ApiserverKubeletClient,
                "kube-apiserver's client certificate for kubelets",
            ),
            ca(CaKind::FrontProxy, "the front-proxy CA"),
            leaf(
                Leaf::FrontProxyClient,
                "client certificate of the aggregation proxy",
            ),
            ca(CaKind::Etcd, "the etcd CA"),
            leaf(Leaf::EtcdServer, "etcd's serving certificate"),
            leaf(Leaf::EtcdPeer, "etcd's peer certificate"),
            leaf(
                Leaf::EtcdHealthcheckClient,
                "client certificate for etcd health checks",
            ),
            leaf(
                Leaf::ApiserverEtcdClient,
                "kube-apiserver's client certificate for etcd",
            ),
            pki_phase(
                "sa",
                "the service-account token signing key pair",
                Item::ServiceAccount,
            ),
        ],
    }
}

/// What `certs renew` runs: the certificates and kubeconfigs on every host; then, on the hosts
/// that run a cluster, host after host the units that read them restart (those whose files were
/// written since they started), and a kubelet whose own certificate expired (a cluster shut
/// down past it) bootstraps again. Needs nothing of the API until the control planes run on
/// their new certificates: it renews a cluster whose certificates all expired (offline, from
/// the CA).
pub fn renew_trees() -> (Vec<Phase>, Vec<Phase>) {
    let restart = Phase {
        name: "restart",
        summary: "host after host: the control plane, kubelet and kube-proxy on their renewed credentials",
        work: Work::Rolling { batch: 1 },
        children: vec![
            super::control_plane::phase(),
            super::kubelet::kubelet_phase(),
            super::kubelet::kube_proxy_phase(),
        ],
    };
    (vec![certs_phase(), kubeconfig_phase()], vec![restart])
}

pub fn kubeconfig_phase() -> Phase {
    let kc = |k: KubeconfigKind, summary| pki_phase(k.name(), summary, Item::Kubeconfig(k));
    Phase {
        name: "kubeconfig",
        summary: "kubeconfig files in /etc/kubernetes",
        work: Work::Group,
        children: vec![
            kc(
                KubeconfigKind::Admin,
                "admin.conf (kubeadm:cluster-admins), also written locally",
            ),
            kc(
                KubeconfigKind::SuperAdmin,
                "super-admin.conf (system:masters), seed control plane only",
            ),
            kc(KubeconfigKind::ControllerManager, "controller-manager.conf"),
            kc(KubeconfigKind::Scheduler, "scheduler.conf"),
            kc(
                KubeconfigKind::Kubelet,
                "kubelet.conf of the control-plane node",
            ),
            kube_proxy_kubeconfig(),
        ],
    }
}

/// kube-proxy.conf, on every node (`join` runs it alone).
pub fn kube_proxy_kubeconfig() -> Phase {
    pki_phase(
        "kube-proxy",
        "kube-proxy.conf (system:kube-proxy), every node",
        Item::Kubeconfig(KubeconfigKind::KubeProxy),
    )
}

/// One PKI item as a step: the host's files are probed, the CA (or the service-account key)
/// comes from the run, and `desired` keeps what is compliant and issues what is not.
struct Pki(Item);

/// What a PKI item's hosts share: its CA (the signing one for leaves and kubeconfigs), the
/// service-account key pair, and whether renewal was asked for.
#[derive(Default)]
struct Inputs {
    ca: Option<Ca>,
    service_account: Option<(String, String)>,
    renew: bool,
}

fn cert_file(p: &str, content: String) -> Action {
    Action::file(p, content, 0o644)
}

/// The actions that put `item` on `host`, and notes on what was re-issued and why.
fn desired(
    cluster: &Cluster,
    host: &Host,
    item: Item,
    observed: &Observed,
    inputs: &Inputs,
) -> Result<(Vec<Action>, Vec<String>), String> {
    let forced = inputs.renew;
    let ca = || inputs.ca.as_ref().ok_or("internal: no CA for a PKI item");
    match item {
        Item::Ca(kind) => {
            let ca = ca()?;
            let mut actions = vec![cert_file(&path(kind.base(), "crt"), ca.cert_pem.clone())];
            if let Some(key) = &ca.key_pem {
                actions.push(Action::secret_file(&path(kind.base(), "key"), key.clone()));
            }
            Ok((actions, Vec::new()))
        }
        Item::ServiceAccount => {
            let (key, public) = inputs
                .service_account
                .clone()
                .ok_or("internal: no service-account key")?;
            Ok((
                vec![
                    Action::secret_file(&path("sa", "key"), key),
                    cert_file(&path("sa", "pub"), public),
                ],
                Vec::new(),
            ))
        }
        Item::Leaf(leaf) => {
            let ca = ca()?;
            let (crt, key) = (path(leaf.base(), "crt"), path(leaf.base(), "key"));
            let (crt_now, key_now) = (observed.file(&crt)?, observed.file(&key)?);
            let spec = leaf.spec(cluster, host);
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let reason = match (text(crt_now), text(key_now)) {
                _ if forced => Some("renewal requested".to_string()),
                (Some(c), Some(k)) => ca.check(&spec, &c, Some(&k)).err(),
                (Some(_), None) => Some("its key is missing".into()),
                (None, _) => Some("missing".into()),
            };
            let Some(reason) = reason else {
                return Ok((
                    vec![
                        cert_file(&crt, text(crt_now).unwrap_or_default()),
                        Action::secret_file(&key, key_now.unwrap_or_default().to_vec()),
                    ],
                    Vec::new(),
                ));
            };
            if ca.key_pem.is_none() {
                return Err(format!(
                    "{crt} is externally managed and {reason}: place a valid certificate and key signed by your CA there"
                ));
            }
            let (cert_pem, key_pem) = ca
                .issue(&spec, cluster.pki.key_type, cluster.pki.cert_validity_days)
                .map_err(|e| e.to_string())?;
            let note =
                (reason != "missing").then(|| format!("{} re-issued: {reason}", leaf.name()));
            Ok((
                vec![
                    cert_file(&crt, cert_pem),
                    Action::secret_file(&key, key_pem),
                ],
                note.into_iter().collect(),
            ))
        }
        Item::Kubeconfig(kind) => {
            let ca = ca()?;
            let p = kind.path();
            let existing = if forced {
                None
            } else {
                observed.file_text(&p)?
            };
            if ca.key_pem.is_none() && existing.is_none() {
                return Err(format!(
                    "{p} is missing and the cluster CA is external without its key: place the kubeconfig there yourself"
                ));
            }
            let (content, reason) =
                kubeconfig::desired(kind, cluster, host, ca, existing.as_deref())?;
            let why = if forced {
                Some("renewal requested")
            } else {
                reason.as_deref().filter(|r| *r != "missing")
            };
            let note = why.map(|r| format!("{} re-issued: {r}", kind.name()));
            Ok((
                vec![Action::secret_file(&p, content)],
                note.into_iter().collect(),
            ))
        }
    }
}

/// Names `certs renew all` renews: every leaf and kubeconfig, never a CA (as kubeadm).
pub fn renewable() -> BTreeSet<String> {
    Leaf::ALL
        .iter()
        .map(|l| l.name().to_string())
        .chain(KubeconfigKind::ALL.iter().map(|k| k.name().to_string()))
        .collect()
}

#[async_trait::async_trait]
impl Step for Pki {
    type Shared = Inputs;

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        self.0.applies_to(cluster, host)
    }

    fn probes(&self, _: &Cluster, _: &Host) -> Vec<Probe> {
        match self.0 {
            // CAs and the service-account key are the cluster's, read from the seed control plane
            Item::Ca(_) | Item::ServiceAccount => Vec::new(),
            item => item.paths().into_iter().map(Probe::File).collect(),
        }
    }

    async fn prepare(&self, ctx: &Ctx, _: &[(&Host, &Observed)]) -> Result<Inputs, String> {
        let mut inputs = Inputs {
            renew: ctx.options.renew.contains(self.0.name()),
            ..Inputs::default()
        };
        match self.0 {
            // only the phase of a CA may create it
            Item::Ca(kind) => inputs.ca = Some(ctx.ca(kind, true).await?),
            Item::ServiceAccount => inputs.service_account = Some(ctx.service_account().await?),
            Item::Leaf(leaf) => inputs.ca = Some(ctx.ca(leaf.ca(), false).await?),
            Item::Kubeconfig(_) => inputs.ca = Some(ctx.ca(CaKind::Kubernetes, false).await?),
        }
        Ok(inputs)
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        inputs: &Inputs,
    ) -> Result<Desired, String> {
        let (actions, notes) = desired(cluster, host, self.0, observed, inputs)?;
        Ok(Desired { actions, notes })
    }

    /// admin.conf of the seed control plane is also written on the operator's machine.
    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        applied: &Applied<'_, Inputs>,
    ) -> Result<After, String> {
        let mut after = After::default();
        // API clients made earlier in this run hold the old credentials (`certs renew` of a
        // cluster whose admin certificate expired): the next use reads the new ones
        if applied.changed
            && matches!(
                self.0,
                Item::Kubeconfig(KubeconfigKind::Admin | KubeconfigKind::SuperAdmin)
            )
            && ctx.cluster.is_seed_control_plane(host)
        {
            ctx.api_clients.lock().await.clear();
        }
        if self.0 == Item::Kubeconfig(KubeconfigKind::Admin)
            && ctx.cluster.is_seed_control_plane(host)
            && let Some(path) = &ctx.options.local_kubeconfig
            && let Some(Action::File(f)) = applied.actions.first()
        {
            after.notes.push(local_kubeconfig::write(path, &f.content)?);
        }
        Ok(after)
    }
}
