//! The bundle (DESIGN §4): which components each host needs at which versions, where their
//! verified files come from (upstream, a mirror, or a bundle directory), and where they go on
//! a host.

pub mod cache;
pub mod fetch;
pub mod lock;
pub mod manifest;
pub mod ops;
pub mod plan;

use crate::catalog::digest::Digest;
use crate::catalog::{self, Install, Packaging};
use crate::cluster::{BundleSource, Cluster, Host};
use crate::host::Action;
use crate::host::action::LocalContent;
use crate::inventory::Arch;
use cache::{Cache, CachedFile};
use lock::{LockFile, Locked};
use manifest::{BundleDir, Kind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where versioned component directories live on a host.
pub const HOST_ROOT: &str = "/opt/provision";
/// Where image archives wait for the runtime to import them.
pub const HOST_IMAGES: &str = "/var/lib/provision/images";

/// One component at one version for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Want {
    pub component: String,
    pub version: String,
    pub arch: Arch,
}

impl Want {
    pub fn label(&self) -> String {
        format!("{} {} ({})", self.component, self.version, self.arch)
    }
}

/// The catalog components a host's roles need, in install order.
pub fn components_for(cluster: &Cluster, host: &Host) -> Vec<&'static str> {
    let mut c = Vec::new();
    if host.control_plane {
        c.extend([
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
        ]);
    }
    // every host is a node: the control plane runs a kubelet too
    c.extend(["kubelet", "kube-proxy", "cni-plugins", "crictl"]);
    if cluster.policy_engine {
        c.push(crate::cni::policy_engine::COMPONENT);
    }
    c.extend(crate::runtime::of(cluster.runtime).components(&cluster.runtime_classes));
    c.extend(["pause", "coredns", "busybox"]);
    c
}

/// What every host of `hosts` needs, resolved to versions. Images are left out where the
/// source cannot carry them (upstream and mirrors: the runtime pulls them from the registry).
pub fn wants(
    cluster: &Cluster,
    hosts: &[Host],
    dir: Option<&BundleDir>,
) -> Result<BTreeMap<String, Vec<Want>>, String> {
    let mut out = BTreeMap::new();
    for h in hosts {
        let mut list = Vec::new();
        for comp in components_for(cluster, h) {
            let is_image = catalog::component(comp).map(|c| c.packaging) == Some(Packaging::Image);
            if is_image && dir.is_none_or(|d| d.versions(comp, h.arch).is_empty()) {
                continue;
            }
            list.push(Want {
                component: comp.to_string(),
                version: version_for(cluster, comp, h.arch, dir)?,
                arch: h.arch,
            });
        }
        // images a bundle directory adds of its own (test or workload images) go to every node
        if let Some(d) = dir {
            let mut extra: BTreeSet<(String, String)> = BTreeSet::new();
            for e in &d.manifest.files {
                if e.arch == h.arch
                    && e.kind() == Kind::Image
                    && catalog::component(&e.component).is_none()
                {
                    extra.insert((e.component.clone(), e.version.clone()));
                }
            }
            list.extend(extra.into_iter().map(|(component, version)| Want {
                component,
                version,
                arch: h.arch,
            }));
        }
        out.insert(h.name.clone(), list);
    }
    Ok(out)
}

/// The version of `component` to install: the inventory's override, else the catalog's for the
/// cluster's Kubernetes version, else (from a bundle directory) the one version it holds.
pub fn version_for(
    cluster: &Cluster,
    component: &str,
    arch: Arch,
    dir: Option<&BundleDir>,
) -> Result<String, String> {
    let chosen = cluster
        .bundle_versions
        .get(component)
        .cloned()
        .or_else(|| catalog::default_version(component, &cluster.version));
    let Some(d) = dir else {
        return chosen.ok_or_else(|| {
            format!(
                "the catalog has no {component} release for Kubernetes {}; set spec.bundle.versions.{component} (its digest is then learnt from the published .sha256 or must be in the lock file), or use a bundle directory",
                cluster.version
            )
        });
    };
    let held = d.versions(component, arch);
    let overridden = cluster.bundle_versions.contains_key(component);
    match chosen {
        Some(v) if held.contains(&v) => Ok(v),
        Some(v) if overridden || held.is_empty() || catalog::is_kube(component) => Err(format!(
            "the bundle directory {} has no {component} {v} for {arch}{}; add it to the bundle{}",
            d.root.display(),
            if held.is_empty() {
                String::new()
            } else {
                format!(" (it holds {})", held.join(", "))
            },
            if overridden {
                ", or change spec.bundle.versions"
            } else {
                ""
            }
        )),
        _ if held.len() == 1 => Ok(held[0].clone()),
        None if held.is_empty() => Err(format!(
            "the bundle directory {} has no {component} for {arch}; add it to the bundle",
            d.root.display()
        )),
        _ => Err(format!(
            "the bundle directory {} holds {component} {} for {arch}; choose one with spec.bundle.versions.{component}",
            d.root.display(),
            held.join(", ")
        )),
    }
}

/// A file a host receives.
#[derive(Debug, Clone)]
pub struct ShipFile {
    pub rel: String,
    pub local: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub mode: u32,
}

/// Verified local files for every wanted component.
#[derive(Debug, Default)]
pub struct Prepared {
    pub files: BTreeMap<Want, Vec<ShipFile>>,
    /// Digests learnt from published `.sha256` files and recorded in the lock file.
    pub newly_locked: Vec<String>,
    pub bytes_fetched: u64,
}

/// Where a download comes from and the digest it must have.
pub struct Source {
    pub url: String,
    pub digest: Option<Digest>,
}

/// The download URL of a want for an upstream or mirror source (the mirror keeps upstream's
/// host and path under its base URL: `<mirror>/dl.k8s.io/release/...`).
pub fn download_url(cluster: &Cluster, want: &Want) -> Option<String> {
    catalog::component(&want.component).map(|c| url_of(cluster, c, want))
}

/// Where `want` of catalog component `c` downloads from: upstream, or the mirror's copy.
fn url_of(cluster: &Cluster, c: &catalog::Component, want: &Want) -> String {
    mirrored(cluster, c.url_for(&want.version, want.arch))
}

/// An upstream URL, or its copy on the inventory's mirror.
fn mirrored(cluster: &Cluster, upstream: String) -> String {
    match &cluster.bundle {
        BundleSource::Mirror { url, .. } => {
            format!("{url}/{}", upstream.trim_start_matches("https://"))
        }
        _ => upstream,
    }
}

/// Where upstream publishes the digest of the download at `url`: a `.sha256` file of that
/// digest alone (name None), or a checksums file of the release, where `name` is looked up.
fn published_digest(
    cluster: &Cluster,
    c: &catalog::Component,
    w: &Want,
    url: &str,
) -> Option<(String, Option<String>)> {
    if c.has_published_sha256() {
        return Some((format!("{url}.sha256"), None));
    }
    let list = c.checksums_url(&w.version)?;
    let upstream = c.url_for(&w.version, w.arch);
    let name = upstream.rsplit('/').next().unwrap_or_default().to_string();
    Some((mirrored(cluster, list), Some(name)))
}

/// Makes every want's files available locally: reads a bundle directory, or fetches into the
/// cache what it lacks (learning and locking digests published beside unpinned downloads).
pub async fn prepare(
    cluster: &Cluster,
    lock_path: Option<&Path>,
    wants: &BTreeSet<Want>,
) -> Result<Prepared, String> {
    let mut prepared = Prepared::default();
    if let BundleSource::Dir { path } = &cluster.bundle {
        let dir = BundleDir::open(path)?;
        for w in wants {
            let files: Vec<ShipFile> = dir
                .entries(&w.component, &w.version, w.arch)
                .map(|e| ShipFile {
                    rel: e.install_path(),
                    local: dir.path_of(e),
                    sha256: e.sha256.trim_start_matches("sha256:").to_string(),
                    size: std::fs::metadata(dir.path_of(e))
                        .map(|m| m.len())
                        .unwrap_or(0),
                    mode: if e.kind() == Kind::Image {
                        0o644
                    } else {
                        0o755
                    },
                })
                .collect();
            if files.is_empty() {
                return Err(format!(
                    "the bundle directory {} has no {}",
                    path.display(),
                    w.label()
                ));
            }
            prepared.files.insert(w.clone(), files);
        }
        return Ok(prepared);
    }
    let ca_file = match &cluster.bundle {
        BundleSource::Mirror { ca_file, .. } => ca_file.as_deref(),
        _ => None,
    };
    let cache = Cache::locate()?;
    let fetcher = fetch::Fetcher::new(ca_file)?;
    let mut lock = match lock_path {
        Some(p) => LockFile::load(p)?,
        None => LockFile::default(),
    };
    for w in wants {
        let c = catalog::component(&w.component)
            .ok_or_else(|| format!("{}: not a component of the catalog", w.label()))?;
        if c.packaging == Packaging::Image {
            continue;
        }
        let url = url_of(cluster, c, w);
        let digest = match catalog::pinned(c.name, w.arch, &w.version)
            .or_else(|| lock.get(c.name, &w.version, w.arch).cloned())
        {
            Some(d) => d,
            None if let Some((list, name)) = published_digest(cluster, c, w, &url) => {
                let text = fetcher
                    .text(&w.label(), &list)
                    .await
                    .map_err(|e| e.to_string())?;
                let d = match &name {
                    None => fetch::parse_sha256_file(&text),
                    Some(name) => fetch::parse_checksums(&text, name),
                }
                .ok_or_else(|| {
                    format!(
                        "{}: {list} holds no sha256 digest{}",
                        w.label(),
                        name.map(|n| format!(" for {n}")).unwrap_or_default()
                    )
                })?;
                lock.add(Locked {
                    component: c.name.to_string(),
                    version: w.version.clone(),
                    arch: w.arch,
                    url: c.url_for(&w.version, w.arch),
                    digest: d.clone(),
                });
                prepared.newly_locked.push(w.label());
                d
            }
            None => {
                return Err(format!(
                    "{}: no digest is pinned for {url}; add it to the lock file{}",
                    w.label(),
                    lock_path
                        .map(|p| format!(" {}", p.display()))
                        .unwrap_or_default()
                ));
            }
        };
        let blob = cache.blob(&digest);
        if !blob.exists() {
            prepared.bytes_fetched += fetcher
                .download(&w.label(), &url, &cache.partial(&digest), &blob, &digest)
                .await
                .map_err(|e| e.to_string())?;
        }
        let files = cache.files_of(&digest, c.packaging, c.install, &w.label())?;
        prepared
            .files
            .insert(w.clone(), files.into_iter().map(ship_file).collect());
    }
    if !prepared.newly_locked.is_empty()
        && let Some(p) = lock_path
    {
        lock.save(p)?;
    }
    Ok(prepared)
}

fn ship_file(f: CachedFile) -> ShipFile {
    ShipFile {
        rel: f.rel,
        local: f.path,
        sha256: f.sha256,
        size: f.size,
        mode: f.mode,
    }
}

/// How a want's files are installed: from the catalog, or (for a bundle directory's own
/// components) from the kind of its files.
fn install_of(want: &Want) -> Install {
    catalog::component(&want.component)
        .map(|c| c.install)
        .unwrap_or(Install::Image)
}

/// The actions that put a host's components in place: each version in its own directory,
/// reached through symlinks (an upgrade or rollback is a symlink switch).
pub fn host_actions(wants: &[Want], prepared: &Prepared) -> Vec<Action> {
    let mut actions = vec![Action::dir(HOST_ROOT, 0o755)];
    let mut links = Vec::new();
    for w in wants {
        let Some(files) = prepared.files.get(w) else {
            continue;
        };
        let install = install_of(w);
        if install == Install::Image {
            if !actions.iter().any(|a| a.subject() == HOST_IMAGES) {
                actions.push(Action::dir(HOST_IMAGES, 0o755));
            }
            for f in files {
                let path = format!("{HOST_IMAGES}/{}_{}.tar", w.component, w.version);
                actions.push(Action::local_file(&path, local(f), 0o644));
            }
            continue;
        }
        let base = format!("{HOST_ROOT}/{}/{}", w.component, w.version);
        actions.push(Action::dir(&format!("{HOST_ROOT}/{}", w.component), 0o755));
        actions.push(Action::dir(&base, 0o755));
        for f in files {
            let path = format!("{base}/{}", f.rel);
            actions.push(Action::local_file(&path, local(f), f.mode));
            match install {
                Install::Bin { .. } => {
                    links.push(Action::symlink(&format!("/usr/local/bin/{}", f.rel), &path))
                }
                Install::CniPlugins => {
                    links.push(Action::symlink(&format!("/opt/cni/bin/{}", f.rel), &path))
                }
                _ => {}
            }
        }
        if let Install::Tree { link, bin, .. } = install {
            links.push(Action::symlink(link, &base));
            for b in bin {
                let name = b.rsplit('/').next().unwrap_or(b);
                links.push(Action::symlink(
                    &format!("/usr/local/bin/{name}"),
                    &format!("{link}/{b}"),
                ));
            }
        }
    }
    // links switch only after every file of every component is in place
    actions.extend(links);
    actions
}

/// The reference an OCI image archive names itself by (`io.containerd.image.name`, the name
/// `ctr images import` gives it).
pub fn oci_image_ref(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.trim_start_matches("./") != "index.json" {
            continue;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text)
            .map_err(|e| format!("{}: index.json: {e}", path.display()))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: index.json: {e}", path.display()))?;
        return index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|m| m["annotations"]["io.containerd.image.name"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{}: the image names no reference (annotation io.containerd.image.name)",
                    path.display()
                )
            });
    }
    Err(format!(
        "{}: not an OCI image archive (no index.json)",
        path.display()
    ))
}

fn local(f: &ShipFile) -> LocalContent {
    LocalContent {
        path: f.local.clone(),
        sha256: f.sha256.clone(),
        size: f.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(c: &str, v: &str) -> Want {
        Want {
            component: c.into(),
            version: v.into(),
            arch: Arch::Amd64,
        }
    }

    fn file(rel: &str) -> ShipFile {
        ShipFile {
            rel: rel.into(),
            local: PathBuf::from("/nonexistent").join(rel),
            sha256: "0".repeat(64),
            size: 1,
            mode: 0o755,
        }
    }

    #[test]
    fn components_land_in_versioned_dirs_behind_symlinks() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut p = Prepared::default();
        let (etcd, cni, pause) = (
            want("etcd", "3.6.14"),
            want("cni-plugins", "1.9.1"),
            want("pause", "3.10.2"),
        );
        p.files
            .insert(etcd.clone(), vec![file("etcd"), file("etcdctl")]);
        p.files.insert(cni.clone(), vec![file("bridge")]);
        p.files.insert(pause.clone(), vec![file("pause.tar")]);
        let actions = host_actions(&[etcd, cni, pause], &p);
        let find = |path: &str| {
            actions
                .iter()
                .find(|a| a.subject() == path)
                .unwrap_or_else(|| panic!("no action for {path}: {actions:#?}"))
        };
        assert!(
            matches!(find("/opt/provision/etcd/3.6.14/etcdctl"), Action::File(f) if f.mode == 0o755 && f.local.is_some())
        );
        assert!(
            matches!(find("/usr/local/bin/etcd"), Action::Symlink { target, .. } if target == "/opt/provision/etcd/3.6.14/etcd")
        );
        assert!(
            matches!(find("/opt/cni/bin/bridge"), Action::Symlink { target, .. } if target == "/opt/provision/cni-plugins/1.9.1/bridge")
        );
        assert!(
            matches!(find("/var/lib/provision/images/pause_3.10.2.tar"), Action::File(f) if f.mode == 0o644)
        );
        // every symlink comes after every file
        let first_link = actions
            .iter()
            .position(|a| matches!(a, Action::Symlink { .. }))
            .ok_or("the plan has no symlink")?;
        assert!(
            actions[first_link..]
                .iter()
                .all(|a| matches!(a, Action::Symlink { .. }))
        );
        Ok(())
    }
}
