//! The `certs` and `kubeconfig` phases: kubeadm's PKI on every control plane in scope.
//!
//! The CAs and the service-account key live on the first control plane. They are read from it
//! (into memory, never onto the operator's disk) or, when absent, created by their own phase and
//! written there first. A leaf or kubeconfig already on a host is kept when it is compliant and
//! replaced, with the reason shown, when it is not.

use super::{Ctx, Phase, Work};
use crate::cluster::Host;
use crate::host::Action;
use crate::host::read::read_files;
use crate::pki::kubeconfig::{self, KubeconfigKind};
use crate::pki::{self, Ca, CaKind, Leaf, PKI_DIR};
use std::collections::{BTreeMap, BTreeSet};

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

    pub fn applies_to(self, ctx: &Ctx, host: &Host) -> bool {
        match self {
            // cluster-admin break-glass credentials exist once, on the first control plane
            Item::Kubeconfig(KubeconfigKind::SuperAdmin) => {
                host.control_plane && Some(&host.name) == first_control_plane(ctx).map(|h| &h.name)
            }
            // kube-proxy runs on every node
            Item::Kubeconfig(KubeconfigKind::KubeProxy) => true,
            _ => host.control_plane,
        }
    }
}

/// In kubeadm's order: each CA before the leaves it signs.
pub fn certs_phase() -> Phase {
    let leaf = |l: Leaf, summary: &'static str| Phase {
        name: l.name(),
        summary,
        work: Work::Pki(Item::Leaf(l)),
        children: Vec::new(),
    };
    let ca = |k: CaKind, summary: &'static str| Phase {
        name: k.name(),
        summary,
        work: Work::Pki(Item::Ca(k)),
        children: Vec::new(),
    };
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
            Phase {
                name: "sa",
                summary: "the service-account token signing key pair",
                work: Work::Pki(Item::ServiceAccount),
                children: Vec::new(),
            },
        ],
    }
}

pub fn kubeconfig_phase() -> Phase {
    let kc = |k: KubeconfigKind, summary: &'static str| Phase {
        name: k.name(),
        summary,
        work: Work::Pki(Item::Kubeconfig(k)),
        children: Vec::new(),
    };
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
                "super-admin.conf (system:masters), first control plane only",
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
    Phase {
        name: "kube-proxy",
        summary: "kube-proxy.conf (system:kube-proxy), every node",
        work: Work::Pki(Item::Kubeconfig(KubeconfigKind::KubeProxy)),
        children: Vec::new(),
    }
}

/// What the PKI phases of one run share: CAs and the service-account key, in memory only.
#[derive(Default)]
pub struct PkiCache {
    cas: BTreeMap<CaKind, Ca>,
    sa: Option<(String, String)>,
}

pub fn first_control_plane(ctx: &Ctx) -> Option<&Host> {
    ctx.cluster.control_planes().next()
}

fn path(base: &str, ext: &str) -> String {
    format!("{PKI_DIR}/{base}.{ext}")
}

async fn read_first(
    ctx: &Ctx,
    paths: &[String],
) -> Result<(String, BTreeMap<String, Vec<u8>>), String> {
    let first = first_control_plane(ctx).ok_or("the inventory has no control plane")?;
    let session = ctx.session(first).await.map_err(|e| e.to_string())?;
    let files = read_files(&session, paths)
        .await
        .map_err(|e| e.to_string())?;
    Ok((first.name.clone(), files))
}

fn text(files: &BTreeMap<String, Vec<u8>>, p: &str) -> Option<String> {
    files
        .get(p)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The CA of `kind`: from the run's cache, the inventory (external CA), or the first control
/// plane; created only when `create` (its own phase) and absent everywhere.
pub async fn ca(ctx: &Ctx, kind: CaKind, create: bool) -> Result<Ca, String> {
    let mut cache = ctx.pki.lock().await;
    if let Some(ca) = cache.cas.get(&kind) {
        return Ok(ca.clone());
    }
    let pki = &ctx.cluster.pki;
    let ca = match (&pki.external_ca, kind) {
        (Some(ext), CaKind::Kubernetes) => Ca {
            kind,
            cert_pem: ext.cert_pem.clone(),
            key_pem: ext.key_pem.clone(),
        },
        _ => {
            let (crt, key) = (path(kind.base(), "crt"), path(kind.base(), "key"));
            let (first, files) = read_first(ctx, &[crt.clone(), key.clone()]).await?;
            match (text(&files, &crt), text(&files, &key)) {
                (Some(cert_pem), Some(key_pem)) => {
                    crate::x509::check_external_ca(&cert_pem, Some(&key_pem)).map_err(|e| {
                        format!("the {} CA on {first} is unusable: {e}", kind.common_name())
                    })?;
                    Ca {
                        kind,
                        cert_pem,
                        key_pem: Some(key_pem),
                    }
                }
                (Some(_), None) => {
                    return Err(format!(
                        "{first} has {crt} but not its key: restore {key}, or move both away to create a new CA (every certificate it signed will then be re-issued)"
                    ));
                }
                (None, _) if create => Ca::generate(kind, pki.key_type, pki.ca_validity_days)
                    .map_err(|e| e.to_string())?,
                (None, _) => {
                    return Err(format!(
                        "{first} has no {} CA yet: run `provision init phase certs/{}` first",
                        kind.common_name(),
                        kind.name()
                    ));
                }
            }
        }
    };
    cache.cas.insert(kind, ca.clone());
    Ok(ca)
}

async fn service_account(ctx: &Ctx) -> Result<(String, String), String> {
    let mut cache = ctx.pki.lock().await;
    if let Some(sa) = &cache.sa {
        return Ok(sa.clone());
    }
    let (key, public) = (path("sa", "key"), path("sa", "pub"));
    let (_, files) = read_first(ctx, &[key.clone(), public.clone()]).await?;
    let pair = match text(&files, &key) {
        // the public half is derived from the private one, so a lost sa.pub is simply rewritten
        Some(k) => {
            let p = pki::public_key_of(&k)
                .map_err(|e| format!("{key} on the first control plane: {e}"))?;
            (k, p)
        }
        None => pki::service_account_key(ctx.cluster.pki.key_type).map_err(|e| e.to_string())?,
    };
    cache.sa = Some(pair.clone());
    Ok(pair)
}

fn cert_file(p: &str, content: String) -> Action {
    Action::file(p, content, 0o644)
}

/// The actions that put `item` on `host`, and notes on what was re-issued and why.
pub async fn desired(
    ctx: &Ctx,
    host: &Host,
    item: Item,
) -> Result<(Vec<Action>, Vec<String>), String> {
    let forced = ctx.renew.contains(item.name());
    match item {
        Item::Ca(kind) => {
            let ca = ca(ctx, kind, true).await?;
            let mut actions = vec![cert_file(&path(kind.base(), "crt"), ca.cert_pem.clone())];
            if let Some(key) = &ca.key_pem {
                actions.push(Action::secret_file(&path(kind.base(), "key"), key.clone()));
            }
            Ok((actions, Vec::new()))
        }
        Item::ServiceAccount => {
            let (key, public) = service_account(ctx).await?;
            Ok((
                vec![
                    Action::secret_file(&path("sa", "key"), key),
                    cert_file(&path("sa", "pub"), public),
                ],
                Vec::new(),
            ))
        }
        Item::Leaf(leaf) => {
            let ca = ca(ctx, leaf.ca(), false).await?;
            let (crt, key) = (path(leaf.base(), "crt"), path(leaf.base(), "key"));
            let session = ctx.session(host).await.map_err(|e| e.to_string())?;
            let files = read_files(&session, &[crt.clone(), key.clone()])
                .await
                .map_err(|e| e.to_string())?;
            let spec = leaf.spec(&ctx.cluster, host);
            let reason = match (text(&files, &crt), text(&files, &key)) {
                _ if forced => Some("renewal requested".to_string()),
                (Some(c), Some(k)) => ca.check(&spec, &c, Some(&k)).err(),
                (Some(_), None) => Some("its key is missing".into()),
                (None, _) => Some("missing".into()),
            };
            let Some(reason) = reason else {
                let keep = |p: &str| files.get(p).cloned().unwrap_or_default();
                return Ok((
                    vec![
                        cert_file(&crt, String::from_utf8_lossy(&keep(&crt)).into_owned()),
                        Action::secret_file(&key, keep(&key)),
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
                .issue(
                    &spec,
                    ctx.cluster.pki.key_type,
                    ctx.cluster.pki.cert_validity_days,
                )
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
            let ca = ca(ctx, CaKind::Kubernetes, false).await?;
            let p = kind.path();
            let session = ctx.session(host).await.map_err(|e| e.to_string())?;
            let files = read_files(&session, std::slice::from_ref(&p))
                .await
                .map_err(|e| e.to_string())?;
            let existing = if forced { None } else { text(&files, &p) };
            if ca.key_pem.is_none() && existing.is_none() {
                return Err(format!(
                    "{p} is missing and the cluster CA is external without its key: place the kubeconfig there yourself"
                ));
            }
            let (content, reason) =
                kubeconfig::desired(kind, &ctx.cluster, host, &ca, existing.as_deref())?;
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
