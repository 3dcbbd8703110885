//! The `bootstrap` phase, through the API: the binding that makes `kubeadm:cluster-admins`
//! (admin.conf) cluster admins, kubelet TLS bootstrap (node-bootstrapper, auto-approval of node
//! client certificates and of their renewals), `kube-public/cluster-info` for discovery, the
//! RuntimeClasses of the enabled sandboxes, and the policy engine's identity (a ServiceAccount
//! that may list and watch pods, namespaces and NetworkPolicies, and its token Secret).

use super::step::{After, Applied, Step};
use super::{Phase, Work};
use crate::api::{client, ensure};
use crate::cluster::{Cluster, Host};
use crate::inventory::RuntimeClass as SandboxClass;
use crate::pki::CaKind;
use crate::pki::token::NODE_BOOTSTRAP_GROUP;
use crate::run::Ctx;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{Api, ObjectMeta};
use std::collections::BTreeMap;

pub fn phase() -> Phase {
    Phase {
        name: "bootstrap",
        summary: "RBAC for admins and kubelet TLS bootstrap, cluster-info, RuntimeClasses",
        work: Work::Step(Box::new(Bootstrap)),
        children: Vec::new(),
    }
}

struct Bootstrap;

fn binding(name: &str, role: &str, kind: &str, subject: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind.into(),
            name: subject.into(),
            ..Default::default()
        }]),
    }
}

/// The discovery kubeconfig joining nodes may read anonymously: the CA and the endpoint.
fn cluster_info(ctx: &Ctx, ca_pem: &str) -> Result<ConfigMap, String> {
    use base64::Engine;
    let kubeconfig = kube::config::Kubeconfig {
        clusters: vec![kube::config::NamedCluster {
            name: String::new(),
            cluster: Some(kube::config::Cluster {
                server: Some(ctx.cluster.endpoint.url()),
                certificate_authority_data: Some(
                    base64::engine::general_purpose::STANDARD.encode(ca_pem),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }],
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    };
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some("cluster-info".into()),
            namespace: Some("kube-public".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            serde_yaml::to_string(&kubeconfig).map_err(|e| e.to_string())?,
        )])),
        ..Default::default()
    })
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..Default::default()
    }
}

/// An in-cluster identity for a unit on the hosts: a ServiceAccount in `namespace`, its least
/// rights (a ClusterRole of `rules`, bound to it) and a token Secret the controller manager
/// fills: the credentials of the kubeconfig its unit reads.
struct Identity<'a> {
    namespace: &'a str,
    service_account: &'a str,
    cluster_role: &'a str,
    token_secret: &'a str,
    rules: Vec<PolicyRule>,
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// `ensure` of an object as a future that owns what it needs, its change as a list.
fn ensured<K>(api: Api<K>, obj: K) -> BoxFuture<'static, Result<Vec<String>, String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + Sync + 'static,
    K::DynamicType: Default,
{
    Box::pin(async move { ensure(&api, &obj).await.map(|c| c.into_iter().collect()) })
}

/// `ensure_identity` as a future that owns what it needs.
fn ensured_identity(
    admin: &kube::Client,
    id: Identity<'static>,
) -> BoxFuture<'static, Result<Vec<String>, String>> {
    let admin = admin.clone();
    Box::pin(async move { ensure_identity(&admin, id).await })
}

async fn ensure_identity(admin: &kube::Client, id: Identity<'_>) -> Result<Vec<String>, String> {
    let mut changes = Vec::new();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), id.namespace);
    let sa = ServiceAccount {
        metadata: meta(id.service_account, Some(id.namespace)),
        ..Default::default()
    };
    changes.extend(ensure(&sas, &sa).await?);
    let role = ClusterRole {
        metadata: meta(id.cluster_role, None),
        rules: Some(id.rules),
        ..Default::default()
    };
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    changes.extend(ensure(&roles, &role).await?);
    let mut b = binding(
        id.cluster_role,
        id.cluster_role,
        "ServiceAccount",
        id.service_account,
    );
    if let Some(s) = b.subjects.as_mut().and_then(|s| s.first_mut()) {
        s.api_group = None;
        s.namespace = Some(id.namespace.into());
    }
    let crbs: Api<ClusterRoleBinding> = Api::all(admin.clone());
    changes.extend(ensure(&crbs, &b).await?);
    let mut token_meta = meta(id.token_secret, Some(id.namespace));
    token_meta.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".to_string(),
        id.service_account.to_string(),
    )]));
    let secret = Secret {
        metadata: token_meta,
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), id.namespace);
    changes.extend(ensure(&secrets, &secret).await?);
    Ok(changes)
}

/// kube-router reads (it starts informers on all of these, firewall controller alone or not)
/// and its own Node; it writes nothing through the API.
fn policy_engine_identity() -> Identity<'static> {
    use crate::cni::policy_engine::{CLUSTER_ROLE, NAMESPACE, SERVICE_ACCOUNT, TOKEN_SECRET};
    let read = ["list", "watch"];
    Identity {
        namespace: NAMESPACE,
        service_account: SERVICE_ACCOUNT,
        cluster_role: CLUSTER_ROLE,
        token_secret: TOKEN_SECRET,
        rules: vec![
            rule("", &["pods", "namespaces", "services", "endpoints"], &read),
            rule("", &["nodes"], &["get", "list", "watch"]),
            rule("discovery.k8s.io", &["endpointslices"], &read),
            rule("networking.k8s.io", &["networkpolicies"], &read),
        ],
    }
}

/// The serving-certificate approver reads requests and Nodes, and approves for the kubelet
/// serving signer alone.
fn csr_approver_identity() -> Identity<'static> {
    use crate::approver::{CLUSTER_ROLE, NAMESPACE, SERVICE_ACCOUNT, SIGNER, TOKEN_SECRET};
    let csrs = "certificates.k8s.io";
    let mut signer = rule(csrs, &["signers"], &["approve"]);
    signer.resource_names = Some(vec![SIGNER.into()]);
    Identity {
        namespace: NAMESPACE,
        service_account: SERVICE_ACCOUNT,
        cluster_role: CLUSTER_ROLE,
        token_secret: TOKEN_SECRET,
        rules: vec![
            rule(
                csrs,
                &["certificatesigningrequests"],
                &["get", "list", "watch"],
            ),
            // the approval is a merge patch of the subresource
            rule(csrs, &["certificatesigningrequests/approval"], &["patch"]),
            signer,
            rule("", &["nodes"], &["get", "list"]),
        ],
    }
}

#[async_trait::async_trait]
impl Step for Bootstrap {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        cluster.is_seed_control_plane(host)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        _: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        let mut changes = Vec::new();
        // admin.conf's group has no rights until this binding exists: make it as super-admin
        let root = client(ctx, "super-admin").await?;
        let crbs: Api<ClusterRoleBinding> = Api::all(root.clone());
        let made = ensure(
            &crbs,
            &binding(
                "kubeadm:cluster-admins",
                "cluster-admin",
                "Group",
                "kubeadm:cluster-admins",
            ),
        )
        .await?;
        let admin = client(ctx, "admin").await?;
        // a binding stored just now is enforced a moment later; one that was there already is
        if made.is_some() {
            crate::api::until_cluster_admin(
                &admin,
                "admin.conf (group kubeadm:cluster-admins)",
                std::time::Duration::from_secs(30),
            )
            .await?;
        }
        changes.extend(made);
        // the rest at once: a server-side apply is a round trip each, and these are
        // independent (an identity's objects stay in order inside `ensure_identity`)
        let mut work: Vec<BoxFuture<'_, Result<Vec<String>, String>>> = Vec::new();
        let crbs: Api<ClusterRoleBinding> = Api::all(admin.clone());
        for b in [
            binding(
                "provision:kubelet-bootstrap",
                "system:node-bootstrapper",
                "Group",
                NODE_BOOTSTRAP_GROUP,
            ),
            binding(
                "provision:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                "Group",
                NODE_BOOTSTRAP_GROUP,
            ),
            binding(
                "provision:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "Group",
                "system:nodes",
            ),
        ] {
            work.push(ensured(crbs.clone(), b));
        }
        // cluster-info, readable without credentials
        let ca = ctx.ca(CaKind::Kubernetes, false).await?;
        let public: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-public");
        work.push(ensured(public, cluster_info(ctx, &ca.cert_pem)?));
        let role = Role {
            metadata: ObjectMeta {
                name: Some("provision:bootstrap-signer-clusterinfo".into()),
                namespace: Some("kube-public".into()),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec!["cluster-info".into()]),
                verbs: vec!["get".into()],
                ..Default::default()
            }]),
        };
        let roles: Api<Role> = Api::namespaced(admin.clone(), "kube-public");
        work.push(ensured(roles, role));
        let rb = RoleBinding {
            metadata: ObjectMeta {
                name: Some("provision:bootstrap-signer-clusterinfo".into()),
                namespace: Some("kube-public".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: "provision:bootstrap-signer-clusterinfo".into(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "User".into(),
                name: "system:anonymous".into(),
                ..Default::default()
            }]),
        };
        let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), "kube-public");
        work.push(ensured(rbs, rb));
        if crate::cni::policy_engine::enabled(&ctx.cluster) {
            work.push(ensured_identity(&admin, policy_engine_identity()));
        }
        work.push(ensured_identity(&admin, csr_approver_identity()));
        // one RuntimeClass per enabled sandbox; its handler is the runtime's name for it
        let rcs: Api<RuntimeClass> = Api::all(admin);
        for class in &ctx.cluster.runtime_classes {
            let (name, handler) = match class {
                SandboxClass::Gvisor => ("gvisor", "runsc"),
                SandboxClass::Kata => ("kata", "kata"),
            };
            let rc = RuntimeClass {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                handler: handler.into(),
                ..Default::default()
            };
            work.push(ensured(rcs.clone(), rc));
        }
        for done in futures::future::try_join_all(work).await? {
            changes.extend(done);
        }
        Ok(After {
            changes,
            notes: Vec::new(),
        })
    }
}
