//! The Kubernetes API from the operator's side (kube-rs), with credentials read from the first
//! control plane over SSH into memory. Objects are applied server-side; a change is reported
//! only when the object's resourceVersion moved.

use super::{Ctx, certs};
use crate::host::read::read_files;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub const FIELD_MANAGER: &str = "provision";

/// A client with the credentials of `/etc/kubernetes/<which>.conf` on the first control plane.
pub async fn client(ctx: &Ctx, which: &str) -> Result<Client, String> {
    let mut cache = ctx.api_clients.lock().await;
    if let Some(c) = cache.get(which) {
        return Ok(c.clone());
    }
    let first = certs::first_control_plane(ctx).ok_or("no control plane")?;
    let session = ctx.session(first).await.map_err(|e| e.to_string())?;
    let path = format!("/etc/kubernetes/{which}.conf");
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
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let client = Client::try_from(config).map_err(|e| format!("API client: {e}"))?;
    cache.insert(which.to_string(), client.clone());
    Ok(client)
}

/// Applies `obj` server-side; returns a change line when it was created or altered.
pub async fn ensure<K>(api: &Api<K>, obj: &K) -> Result<Option<String>, String>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().ok_or("an object without a name")?;
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let before = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading {kind} {name}: {e}"))?
        .and_then(|o| o.meta().resource_version.clone());
    let after = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|e| format!("applying {kind} {name}: {e}"))?;
    Ok(match before {
        None => Some(format!("create {kind} {name}")),
        Some(v) if Some(&v) != after.meta().resource_version.as_ref() => {
            Some(format!("update {kind} {name}"))
        }
        _ => None,
    })
}
