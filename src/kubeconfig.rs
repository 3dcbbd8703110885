//! The operator's kubeconfig files (`provision kubeconfig`): the admin's, read from a control
//! plane; a person's, issued now from the cluster CA; either printed, or merged into a
//! kubeconfig that holds other clusters without touching them.

use crate::cluster::Cluster;
use crate::pki::kubeconfig::{Contents, KubeconfigKind, render};
use crate::pki::{CaKind, CertSpec};
use crate::run::Ctx;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// A person's credential: a client certificate for `name` in `groups`, valid `days`.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub groups: Vec<String>,
    pub days: u32,
}

/// The admin kubeconfig of the cluster, as the seed control plane holds it.
pub async fn admin(ctx: &Ctx) -> Result<String, String> {
    let path = KubeconfigKind::Admin.path();
    let (host, files) = ctx.read_seed(std::slice::from_ref(&path)).await?;
    let text = files.get(&path).ok_or_else(|| {
        format!("{host} has no {path}: bring the cluster up with `provision init` first")
    })?;
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// A kubeconfig for `person`, its certificate signed now by the cluster CA (read from the first
/// control plane; it never leaves this process). Kubernetes grants it nothing until RBAC binds
/// the name or one of the groups.
pub async fn for_person(ctx: &Ctx, person: &Person) -> Result<String, String> {
    if person.name.trim().is_empty() {
        return Err("--user needs a name".into());
    }
    if person.days == 0 {
        return Err("--days must be 1 or more".into());
    }
    let cluster = &ctx.cluster;
    let ca = ctx.ca(CaKind::Kubernetes, false).await?;
    let mut spec = CertSpec::client(&person.name, None);
    spec.organizations = person.groups.clone();
    let (cert_pem, key_pem) = ca
        .issue(&spec, cluster.pki.key_type, person.days)
        .map_err(|e| e.to_string())?;
    let contents = Contents {
        server: cluster.endpoint.url(),
        ca_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    };
    render(&cluster.name, &person.name, &contents)
}

/// The name of the merged entries: the cluster's for the admin, `user@cluster` for a person.
pub fn default_name(cluster: &Cluster, person: Option<&Person>) -> String {
    match person {
        Some(p) => format!("{}@{}", p.name, cluster.name),
        None => cluster.name.clone(),
    }
}

/// Where `--merge` without a path writes: the first file of $KUBECONFIG, else ~/.kube/config.
pub fn default_merge_path() -> Result<PathBuf, String> {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set: pass --merge PATH")?;
    Ok(Path::new(&home).join(".kube").join("config"))
}

/// The result of a merge.
#[derive(Debug)]
pub struct Merged {
    pub text: String,
    /// The file already held exactly these entries.
    pub unchanged: bool,
    /// The file had no current context, and now has this one.
    pub made_current: bool,
}

/// `new` (a kubeconfig of one cluster, user and context) merged into `existing` under `name`:
/// a cluster, a user and a context of that name, each added or replaced; every other entry and
/// field is kept as it is. A same-named entry of another cluster (another CA) is replaced only
/// with `force`.
pub fn merge(existing: Option<&str>, new: &str, name: &str, force: bool) -> Result<Merged, String> {
    let new: Value = serde_yaml::from_str(new).map_err(|e| format!("the new kubeconfig: {e}"))?;
    let first = |list: &str, field: &str| -> Result<Value, String> {
        new.get(list)
            .and_then(|l| l.get(0))
            .and_then(|e| e.get(field))
            .cloned()
            .ok_or_else(|| format!("the new kubeconfig has no {list}[0].{field}"))
    };
    let (cluster, user) = (first("clusters", "cluster")?, first("users", "user")?);
    let mut config = parse_existing(existing)?;
    let before = Value::Mapping(config.clone());

    let foreign = foreign_entries(&config, name, &cluster);
    if !foreign.is_empty() && !force {
        return Err(format!(
            "it already has {}; it was left as it is. Pass --context NAME to merge under another name, or --force to replace them",
            foreign.join(", ")
        ));
    }
    let entry = |field: &str, value: Value| {
        let mut m = Mapping::new();
        m.insert("name".into(), name.into());
        m.insert(field.into(), value);
        Value::Mapping(m)
    };
    let mut context = Mapping::new();
    context.insert("cluster".into(), name.into());
    context.insert("user".into(), name.into());
    upsert(&mut config, "clusters", entry("cluster", cluster))?;
    upsert(&mut config, "users", entry("user", user))?;
    upsert(
        &mut config,
        "contexts",
        entry("context", Value::Mapping(context)),
    )?;
    let current = config.get("current-context").and_then(Value::as_str);
    let made_current = current.is_none_or(str::is_empty);
    if made_current {
        config.insert("current-context".into(), name.into());
    }
    let after = Value::Mapping(config);
    Ok(Merged {
        text: serde_yaml::to_string(&after).map_err(|e| e.to_string())?,
        unchanged: after == before,
        made_current,
    })
}

/// The existing file as a mapping; nothing or blank is a new, empty kubeconfig.
fn parse_existing(existing: Option<&str>) -> Result<Mapping, String> {
    let text = existing.unwrap_or_default();
    if text.trim().is_empty() {
        let mut m = Mapping::new();
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Config".into());
        return Ok(m);
    }
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let Value::Mapping(m) = value else {
        return Err("not a kubeconfig (not a YAML mapping)".into());
    };
    match m.get("kind").and_then(Value::as_str) {
        None | Some("Config") => Ok(m),
        Some(kind) => Err(format!("not a kubeconfig (kind: {kind})")),
    }
}

/// Same-named entries that belong to something else, described for the user.
fn foreign_entries(config: &Mapping, name: &str, cluster: &Value) -> Vec<String> {
    let mut foreign = Vec::new();
    let ca = |c: &Value| {
        c.get("certificate-authority-data")
            .and_then(Value::as_str)
            .and_then(|d| B64.decode(d.trim()).ok())
            .map(|pem| String::from_utf8_lossy(&pem).trim().to_string())
    };
    let existing_cluster = find(config, "clusters", name).and_then(|e| e.get("cluster"));
    if let Some(c) = existing_cluster
        && (ca(c).is_none() || ca(c) != ca(cluster))
    {
        foreign.push(format!(
            "a cluster named {name:?} of another cluster (another CA)"
        ));
    }
    if let Some(ctx) = find(config, "contexts", name).and_then(|e| e.get("context")) {
        let field = |f: &str| ctx.get(f).and_then(Value::as_str).unwrap_or("");
        if field("cluster") != name || field("user") != name {
            foreign.push(format!(
                "a context named {name:?} for cluster {:?} and user {:?}",
                field("cluster"),
                field("user")
            ));
        }
    }
    if existing_cluster.is_none() && find(config, "users", name).is_some() {
        foreign.push(format!(
            "a user named {name:?} with no cluster of that name"
        ));
    }
    foreign
}

fn find<'a>(config: &'a Mapping, list: &str, name: &str) -> Option<&'a Value> {
    config
        .get(list)
        .and_then(Value::as_sequence)?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

/// Replaces the entry of `list` with the same name, or appends it.
fn upsert(config: &mut Mapping, list: &str, entry: Value) -> Result<(), String> {
    let slot = config
        .entry(list.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    let Value::Sequence(entries) = slot else {
        return Err(format!("not a kubeconfig ({list} is not a list)"));
    };
    let name = entry.get("name").cloned();
    match entries.iter_mut().find(|e| e.get("name") == name.as_ref()) {
        Some(e) => *e = entry,
        None => entries.push(entry),
    }
    Ok(())
}

/// Merges `new` into the file at `path` (made when absent); returns a line for the user.
pub fn merge_into(
    path: &Path,
    new: &str,
    name: &str,
    force: bool,
    dry_run: bool,
) -> Result<String, String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let merged = merge(existing.as_deref(), new, name, force)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.display();
    if merged.unchanged {
        return Ok(format!("{shown} already has context {name:?}: unchanged"));
    }
    if dry_run {
        return Ok(format!(
            "would merge context {name:?} into {shown} (dry run)"
        ));
    }
    crate::local::write_private(path, merged.text.as_bytes())?;
    let current = if merged.made_current {
        ", now the current context"
    } else {
        ""
    };
    Ok(format!(
        "merged context {name:?} into {shown}{current} (kubectl --context {name} get nodes)"
    ))
}

#[cfg(test)]
mod tests;
