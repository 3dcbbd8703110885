//! The Kubernetes API from the operator's side (kube-rs), with credentials read from the first
//! control plane over SSH into memory. Objects are applied server-side; a change is reported
//! only when the object's resourceVersion moved.

use crate::host::read::read_files;
use crate::run::Ctx;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub const FIELD_MANAGER: &str = "provision";

/// The pause before asking the API again while waiting for a state: short at first, where
/// most waits end (a Node turning Ready, a certificate issued), then a second.
pub fn poll_pause(started: std::time::Instant) -> std::time::Duration {
    if started.elapsed() < std::time::Duration::from_secs(15) {
        std::time::Duration::from_millis(200)
    } else {
        std::time::Duration::from_secs(1)
    }
}

/// A client with the credentials of `/etc/kubernetes/<which>.conf` on the seed control plane.
/// It retries answers of 429, 503 and 504 itself (an API server starting, a proxy without a
/// backend for a moment).
pub async fn client(ctx: &Ctx, which: &str) -> Result<Client, String> {
    client_with(ctx, which, true).await
}

/// The same without retries of its own: for requests whose 429 is an answer, not a load
/// signal (an eviction a PodDisruptionBudget refuses is retried by the drain within its
/// deadline; the client's backoff grows to minutes).
pub async fn client_without_retries(ctx: &Ctx, which: &str) -> Result<Client, String> {
    client_with(ctx, which, false).await
}

async fn client_with(ctx: &Ctx, which: &str, retries: bool) -> Result<Client, String> {
    let key = if retries {
        which.to_string()
    } else {
        format!("{which} (no retries)")
    };
    let mut cache = ctx.api_clients.lock().await;
    if let Some(c) = cache.get(&key) {
        return Ok(c.clone());
    }
    let first = ctx.cluster.seed_control_plane().ok_or("no control plane")?;
    let session = ctx.session(first).await.map_err(|e| e.to_string())?;
    let path = crate::paths::kubeconfig(which);
    let files = read_files(&session, std::slice::from_ref(&path))
        .await
        .map_err(|e| e.to_string())?;
    let text = files.get(&path).ok_or_else(|| {
        format!(
            "{path} is missing on {}: run `provision init` first",
            first.name
        )
    })?;
    let text = String::from_utf8_lossy(text);
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("{path}: {e}"))?;
    config.default_retry = retries;
    let client = Client::try_from(config).map_err(|e| format!("API client: {e}"))?;
    cache.insert(key, client.clone());
    Ok(client)
}

/// Drops this run's API clients and their pooled connections: the next request connects anew
/// (after the endpoint's VIP moved, an old connection is reset).
pub async fn forget_connections(ctx: &Ctx) {
    ctx.api_clients.lock().await.clear();
}

/// Waits until `client` may do anything, everywhere, for up to `within`. A binding that makes
/// its group cluster admins is enforced only once the API server's authorizer has seen it, a
/// moment after it was stored: a request made at once may still be refused.
pub async fn until_cluster_admin(
    client: &Client,
    who: &str,
    within: std::time::Duration,
) -> Result<(), String> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("*".into()),
                group: Some("*".into()),
                resource: Some("*".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let started = std::time::Instant::now();
    loop {
        let answer = reviews
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| failed(&format!("asking what {who} may do"), e))?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(());
        }
        if started.elapsed() >= within {
            return Err(format!(
                "{who} is still not allowed to act {}s after its binding was applied: check \
                 `journalctl -u kube-apiserver` on the seed control plane, then run the same \
                 command again",
                within.as_secs()
            ));
        }
        // the authorizer sees a new binding within milliseconds
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `what` failed with `e`, said so that an API server that does not answer is named as such,
/// with what to do: the usual cause is a control plane not started yet (a skipped phase).
pub fn failed(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Service(_) | kube::Error::HyperError(_) => format!(
            "{what}: the API server does not answer ({e}): start the control plane first \
             (`provision init -i INVENTORY`, phases control-plane and bootstrap), or check \
             `journalctl -u kube-apiserver` on the seed control plane"
        ),
        e => format!("{what}: {e}"),
    }
}

/// Applies `obj` server-side; returns a change line when it was created or altered.
pub async fn ensure<K>(api: &Api<K>, obj: &K) -> Result<Option<String>, String>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().ok_or("an object without a name")?;
    let what = format!("{} {name}", K::kind(&K::DynamicType::default()));
    apply(api, &name, &what, obj, false).await
}

/// Server-side apply of one object (a dry run when asked): "create ..." or "update ..." (with
/// "would" in a dry run) when the object's resourceVersion moved, None when it did not.
async fn apply<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    obj: &K,
    dry_run: bool,
) -> Result<Option<String>, String>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let before = api
        .get_opt(name)
        .await
        .map_err(|e| failed(&format!("reading {what}"), e))?
        .and_then(|o| o.meta().resource_version.clone());
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    let after = api
        .patch(name, &params, &Patch::Apply(obj))
        .await
        .map_err(|e| {
            let how = if dry_run {
                " (server-side dry run)"
            } else {
                ""
            };
            format!("applying {what}{how}: {e}")
        })?;
    let verb = match before {
        None => "create",
        Some(v) if Some(&v) != after.meta().resource_version.as_ref() => "update",
        _ => return Ok(None),
    };
    Ok(Some(if dry_run {
        format!("would {verb} {what}")
    } else {
        format!("{verb} {what}")
    }))
}

/// Applies every document of `manifest` server-side (namespaced objects without a namespace go
/// to `kube-system`); with `dry_run`, the API server validates and admits them but stores
/// nothing. Returns a line per object created or changed (or that would be).
pub async fn apply_manifest(
    client: &Client,
    manifest: &str,
    dry_run: bool,
) -> Result<Vec<String>, String> {
    use kube::core::{DynamicObject, GroupVersionKind};
    use kube::discovery::{self, Scope};
    let mut changes = Vec::new();
    // one discovery request per kind, not per document (Calico has dozens of CRDs)
    let mut kinds = std::collections::HashMap::new();
    for doc in documents(manifest) {
        let mut obj: DynamicObject =
            serde_yaml::from_str(doc).map_err(|e| format!("a manifest document: {e}\n{doc}"))?;
        let types = obj
            .types
            .clone()
            .ok_or("a manifest document without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or("a manifest object without a name")?;
        if !kinds.contains_key(&gvk) {
            let found = discovery::pinned_kind(client, &gvk).await.map_err(|e| {
                format!(
                    "the API server does not serve {} {}: {e}",
                    types.api_version, types.kind
                )
            })?;
            kinds.insert(gvk.clone(), found);
        }
        let (resource, caps) = &kinds[&gvk];
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj
                .metadata
                .namespace
                .get_or_insert_with(|| "kube-system".into())
                .clone();
            Api::namespaced_with(client.clone(), &ns, resource)
        } else {
            Api::all_with(client.clone(), resource)
        };
        let what = format!("{} {name}", types.kind);
        changes.extend(apply(&api, &name, &what, &obj, dry_run).await?);
    }
    Ok(changes)
}

/// What applying `manifest` would create, read from the manifest alone (no API server to ask):
/// "would apply <kind> <name>" per object.
pub fn would_apply(manifest: &str) -> Result<Vec<String>, String> {
    documents(manifest)
        .into_iter()
        .map(|doc| {
            let obj: kube::core::DynamicObject = serde_yaml::from_str(doc)
                .map_err(|e| format!("a manifest document: {e}\n{doc}"))?;
            let kind = obj.types.map(|t| t.kind).unwrap_or_default();
            let name = obj.metadata.name.unwrap_or_default();
            Ok(format!("would apply {kind} {name}"))
        })
        .collect()
}

/// The documents of a multi-document manifest, without empty ones.
pub fn documents(manifest: &str) -> Vec<&str> {
    manifest
        .split("\n---\n")
        .map(str::trim)
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .collect()
}

/// How long the token controller may take to fill a new token Secret.
const TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A ServiceAccount's token from its Secret `namespace/secret` (which the `bootstrap` phase
/// makes), once the controller manager has filled it; None in a dry run before the API serves
/// or the Secret exists.
pub async fn service_account_token(
    ctx: &Ctx,
    namespace: &str,
    secret_name: &str,
) -> Result<Option<String>, String> {
    // a dry run of a cluster not made yet has no API: its token comes with the real run
    let client = match client(ctx, "admin").await {
        Err(_) if ctx.dry_run() => return Ok(None),
        c => c?,
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, namespace);
    let started = std::time::Instant::now();
    loop {
        let secret = match secrets.get_opt(secret_name).await {
            Err(_) if ctx.dry_run() => return Ok(None),
            s => s.map_err(|e| failed(&format!("reading Secret {namespace}/{secret_name}"), e))?,
        };
        let token = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("token"))
            .map(|t| String::from_utf8_lossy(&t.0).into_owned())
            .filter(|t| !t.is_empty());
        match (secret, token) {
            (_, Some(t)) => return Ok(Some(t)),
            (None, None) if ctx.dry_run() => return Ok(None),
            (None, None) => {
                return Err(format!(
                    "Secret {namespace}/{secret_name} is missing (the bootstrap phase makes \
                     it): run `provision init -i INVENTORY phase bootstrap`, then this again"
                ));
            }
            (Some(_), None) if started.elapsed() >= TOKEN_WAIT => {
                return Err(format!(
                    "Secret {namespace}/{secret_name} got no token within {} s: is \
                     kube-controller-manager running (`journalctl -u kube-controller-manager`)?",
                    TOKEN_WAIT.as_secs()
                ));
            }
            (Some(_), None) => tokio::time::sleep(poll_pause(started)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::failed;

    #[test]
    fn an_api_server_that_does_not_answer_is_named_with_what_to_do() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let said = failed(
            "reading Secret a/b",
            kube::Error::Service(Box::new(refused)),
        );
        assert!(said.starts_with("reading Secret a/b: the API server does not answer"));
        assert!(
            said.contains("phases control-plane and bootstrap"),
            "{said}"
        );
        let other = failed("reading x", kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(other, "reading x: Error finding newline character");
    }
}
