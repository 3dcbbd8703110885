//! Kubeconfig files, built from kube's `Kubeconfig` types, with client certificates signed by the
//! cluster CA: kubeadm's admin.conf, super-admin.conf, controller-manager.conf, scheduler.conf
//! kubelet.conf, and kube-proxy.conf for the kube-proxy unit of every node.

use super::{Ca, CertSpec};
use crate::cluster::{API_PORT, Cluster, Host};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kube::config::{AuthInfo, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KubeconfigKind {
    Admin,
    SuperAdmin,
    ControllerManager,
    Scheduler,
    Kubelet,
    KubeProxy,
}

impl KubeconfigKind {
    pub const ALL: [KubeconfigKind; 6] = [
        KubeconfigKind::Admin,
        KubeconfigKind::SuperAdmin,
        KubeconfigKind::ControllerManager,
        KubeconfigKind::Scheduler,
        KubeconfigKind::Kubelet,
        KubeconfigKind::KubeProxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KubeconfigKind::Admin => "admin",
            KubeconfigKind::SuperAdmin => "super-admin",
            KubeconfigKind::ControllerManager => "controller-manager",
            KubeconfigKind::Scheduler => "scheduler",
            KubeconfigKind::Kubelet => "kubelet",
            KubeconfigKind::KubeProxy => "kube-proxy",
        }
    }

    /// The file under /etc/kubernetes.
    pub fn path(self) -> String {
        crate::paths::kubeconfig(self.name())
    }

    /// The client certificate's subject, as kubeadm issues it.
    pub fn client(self, host: &Host) -> CertSpec {
        match self {
            KubeconfigKind::Admin => {
                CertSpec::client("kubernetes-admin", Some("kubeadm:cluster-admins"))
            }
            KubeconfigKind::SuperAdmin => {
                CertSpec::client("kubernetes-super-admin", Some("system:masters"))
            }
            KubeconfigKind::ControllerManager => {
                CertSpec::client("system:kube-controller-manager", None)
            }
            KubeconfigKind::Scheduler => CertSpec::client("system:kube-scheduler", None),
            KubeconfigKind::Kubelet => {
                CertSpec::client(&format!("system:node:{}", host.name), Some("system:nodes"))
            }
            // bound to system:node-proxier by Kubernetes' default RBAC
            KubeconfigKind::KubeProxy => CertSpec::client("system:kube-proxy", None),
        }
    }

    /// The user's name inside the file (kubeadm's).
    pub fn user(self, host: &Host) -> String {
        match self {
            KubeconfigKind::Admin => "kubernetes-admin".into(),
            KubeconfigKind::SuperAdmin => "kubernetes-super-admin".into(),
            KubeconfigKind::ControllerManager => "system:kube-controller-manager".into(),
            KubeconfigKind::Scheduler => "system:kube-scheduler".into(),
            KubeconfigKind::Kubelet => format!("system:node:{}", host.name),
            KubeconfigKind::KubeProxy => "system:kube-proxy".into(),
        }
    }

    /// Components on the control plane talk to their local API server, kubelets and kube-proxy
    /// to the node's API (its local load balancer with a VIP), people to the cluster's endpoint.
    pub fn server(self, cluster: &Cluster, host: &Host) -> String {
        match self {
            KubeconfigKind::ControllerManager | KubeconfigKind::Scheduler => {
                crate::cluster::https_url(&host.address, API_PORT)
            }
            KubeconfigKind::Kubelet | KubeconfigKind::KubeProxy => cluster.node_api_url(),
            KubeconfigKind::Admin | KubeconfigKind::SuperAdmin => cluster.endpoint.url(),
        }
    }
}

/// What a kubeconfig holds that decides whether it is still right.
#[derive(Debug)]
pub struct Contents {
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn render(cluster_name: &str, user: &str, c: &Contents) -> Result<String, String> {
    let auth = AuthInfo {
        client_certificate_data: Some(B64.encode(&c.cert_pem)),
        client_key_data: Some(SecretString::from(B64.encode(&c.key_pem))),
        ..Default::default()
    };
    render_auth(cluster_name, user, &c.server, &c.ca_pem, auth)
}

/// A kubeconfig that authenticates with a bearer token (a bootstrap or ServiceAccount token).
pub fn render_token(
    cluster_name: &str,
    user: &str,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<String, String> {
    let auth = AuthInfo {
        token: Some(SecretString::from(token.to_string())),
        ..Default::default()
    };
    render_auth(cluster_name, user, server, ca_pem, auth)
}

fn render_auth(
    cluster_name: &str,
    user: &str,
    server: &str,
    ca_pem: &str,
    auth: AuthInfo,
) -> Result<String, String> {
    let context = format!("{user}@{cluster_name}");
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: cluster_name.into(),
            cluster: Some(kube::config::Cluster {
                server: Some(server.into()),
                certificate_authority_data: Some(B64.encode(ca_pem)),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(auth),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: context.clone(),
            context: Some(Context {
                cluster: cluster_name.into(),
                user: Some(user.into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(context),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Default::default()
    };
    serde_yaml::to_string(&config).map_err(|e| e.to_string())
}

/// Reads back what [`render`] wrote (or kubeadm did: the same fields).
pub fn parse(text: &str) -> Result<Contents, String> {
    let config: Kubeconfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let decode = |field: &str, v: Option<&str>| -> Result<String, String> {
        let v = v.ok_or_else(|| format!("no {field}"))?;
        let bytes = B64.decode(v.trim()).map_err(|e| format!("{field}: {e}"))?;
        String::from_utf8(bytes).map_err(|e| format!("{field}: {e}"))
    };
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or("no cluster")?;
    let user = config
        .auth_infos
        .first()
        .and_then(|u| u.auth_info.as_ref())
        .ok_or("no user")?;
    Ok(Contents {
        server: cluster.server.clone().ok_or("no server")?,
        ca_pem: decode(
            "certificate-authority-data",
            cluster.certificate_authority_data.as_deref(),
        )?,
        cert_pem: decode(
            "client-certificate-data",
            user.client_certificate_data.as_deref(),
        )?,
        key_pem: decode(
            "client-key-data",
            user.client_key_data.as_ref().map(|s| s.expose_secret()),
        )?,
    })
}

/// The kubeconfig to install: the existing text when it is still right; the existing client
/// certificate with a new server when only the server moved; else a new certificate.
/// Returns (text, why the certificate was re-issued).
pub fn desired(
    kind: KubeconfigKind,
    cluster: &Cluster,
    host: &Host,
    ca: &Ca,
    existing: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let spec = kind.client(host);
    let server = kind.server(cluster, host);
    let parsed = existing.map(parse);
    let reissue = match &parsed {
        None => Some("missing".to_string()),
        Some(Err(e)) => Some(format!("unreadable ({e})")),
        Some(Ok(c)) if c.ca_pem.trim() != ca.cert_pem.trim() => Some("trusts another CA".into()),
        Some(Ok(c)) => ca.check(&spec, &c.cert_pem, Some(&c.key_pem)).err(),
    };
    let (cert_pem, key_pem) = match (&reissue, parsed) {
        (None, Some(Ok(c))) if c.server == server => {
            return Ok((existing.unwrap_or_default().to_string(), None));
        }
        (None, Some(Ok(c))) => (c.cert_pem, c.key_pem),
        _ => ca
            .issue(&spec, cluster.pki.key_type, cluster.pki.cert_validity_days)
            .map_err(|e| e.to_string())?,
    };
    let contents = Contents {
        server,
        ca_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    };
    Ok((render(&cluster.name, &kind.user(host), &contents)?, reissue))
}
