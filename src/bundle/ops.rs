//! The `provision bundle` commands: list, fetch, pack, verify.

use super::cache::Cache;
use super::lock::LockFile;
use super::manifest::{self, BundleDir, Entry, Kind};
use super::{Prepared, Want, download_url, prepare, wants};
use crate::catalog::{self, Install, Packaging};
use crate::cluster::{BundleSource, Cluster};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn dir_of(cluster: &Cluster) -> Result<Option<BundleDir>, String> {
    match &cluster.bundle {
        BundleSource::Dir { path } => BundleDir::open(path).map(Some),
        _ => Ok(None),
    }
}

/// Every component the inventory's hosts need, for every architecture among them.
pub fn all_wants(cluster: &Cluster) -> Result<BTreeSet<Want>, String> {
    let dir = dir_of(cluster)?;
    Ok(wants(cluster, &cluster.hosts, dir.as_ref())?
        .into_values()
        .flatten()
        .collect())
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub component: String,
    pub version: String,
    pub arch: String,
    /// The URL, or the files of a bundle directory.
    pub source: String,
    /// `pinned` (in the catalog), `locked` (lock file), `published` (learnt on first fetch),
    /// `bundle` (a bundle directory's manifest), or `registry` (an image the runtime pulls).
    pub verified_by: String,
    pub digest: Option<String>,
    pub cached: bool,
}

pub fn list(cluster: &Cluster, lock_path: &Path) -> Result<Vec<Row>, String> {
    let lock = LockFile::load(lock_path)?;
    let dir = dir_of(cluster)?;
    let cache = Cache::locate()?;
    let mut rows = Vec::new();
    for w in all_wants(cluster)? {
        let mut row = Row {
            component: w.component.clone(),
            version: w.version.clone(),
            arch: w.arch.to_string(),
            source: String::new(),
            verified_by: String::new(),
            digest: None,
            cached: false,
        };
        if let Some(d) = &dir {
            let files: Vec<&Entry> = d.entries(&w.component, &w.version, w.arch).collect();
            row.source = files
                .iter()
                .map(|e| e.file.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            row.verified_by = "bundle".into();
            row.digest = (files.len() == 1).then(|| format!("sha256:{}", files[0].sha256));
            row.cached = files.iter().all(|e| d.path_of(e).exists());
        } else if catalog::component(&w.component).map(|c| c.packaging) == Some(Packaging::Image) {
            row.source = download_url(cluster, &w).unwrap_or_default();
            row.verified_by = "registry".into();
        } else {
            row.source = download_url(cluster, &w).unwrap_or_default();
            let (by, digest) = match catalog::pinned(&w.component, w.arch, &w.version) {
                Some(d) => ("pinned", Some(d)),
                None => match lock.get(&w.component, &w.version, w.arch) {
                    Some(d) => ("locked", Some(d.clone())),
                    None => ("published", None),
                },
            };
            row.verified_by = by.into();
            row.cached = digest.as_ref().is_some_and(|d| cache.blob(d).exists());
            row.digest = digest.map(|d| d.to_string());
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Fetches everything into the cache; returns (artifacts, bytes fetched, notes).
pub async fn fetch(cluster: &Cluster, lock_path: &Path) -> Result<(usize, Prepared), String> {
    let all = all_wants(cluster)?;
    let prepared = prepare(cluster, Some(lock_path), &all).await?;
    Ok((prepared.files.len(), prepared))
}

/// Writes a bundle directory (or, for a `.tar` output, a tarball of one) holding everything
/// the inventory's hosts need. Returns what it wrote.
pub async fn pack(cluster: &Cluster, lock_path: &Path, out: &Path) -> Result<String, String> {
    let all = all_wants(cluster)?;
    let prepared = prepare(cluster, Some(lock_path), &all).await?;
    let as_tar = out.extension().is_some_and(|e| e == "tar");
    let dir: PathBuf = if as_tar {
        out.with_extension(format!("tmp-{}", std::process::id()))
    } else {
        out.to_path_buf()
    };
    if !as_tar
        && dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
        && !dir.join(manifest::FILE_NAME).exists()
    {
        return Err(format!(
            "{} exists and is not a bundle directory; give an empty or new directory",
            dir.display()
        ));
    }
    let io = |e: std::io::Error, p: &Path| format!("{}: {e}", p.display());
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    for (w, files) in &prepared.files {
        let kind = match catalog::component(&w.component).map(|c| c.install) {
            Some(Install::CniPlugins) => Kind::CniPlugin,
            Some(Install::Tree { .. }) => Kind::Tree,
            Some(Install::Bin { .. }) => Kind::Binary,
            _ => Kind::Image,
        };
        for f in files {
            let rel = format!("{}/{}/{}/{}", w.component, w.version, w.arch, f.rel);
            let dest = dir.join(&rel);
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p).map_err(|e| io(e, p))?;
            }
            let _ = std::fs::remove_file(&dest);
            // a copy, never a hard link: editing the bundle must not alter the cache
            std::fs::copy(&f.local, &dest).map_err(|e| io(e, &dest))?;
            bytes += f.size;
            entries.push(Entry {
                component: w.component.clone(),
                version: w.version.clone(),
                arch: w.arch,
                file: rel,
                sha256: f.sha256.clone(),
                kind: Some(kind),
            });
        }
    }
    let m = dir.join(manifest::FILE_NAME);
    std::fs::write(&m, manifest::render(entries.clone())?).map_err(|e| io(e, &m))?;
    let images_skipped: Vec<String> = all
        .iter()
        .filter(|w| !prepared.files.contains_key(*w))
        .map(|w| format!("{} {}", w.component, w.version))
        .collect();
    let mut said = format!(
        "{} files ({}) of {} components",
        entries.len(),
        super::fetch::human_bytes(bytes),
        prepared.files.len()
    );
    if as_tar {
        let file = std::fs::File::create(out).map_err(|e| io(e, out))?;
        let mut t = tar::Builder::new(file);
        t.follow_symlinks(true);
        t.append_dir_all(".", &dir).map_err(|e| io(e, out))?;
        t.finish().map_err(|e| io(e, out))?;
        std::fs::remove_dir_all(&dir).map_err(|e| io(e, &dir))?;
        said = format!("wrote {} with {said}", out.display());
    } else {
        said = format!("wrote the bundle directory {} with {said}", dir.display());
    }
    if !images_skipped.is_empty() {
        said.push_str(&format!(
            "\nnot packed: {} (images the runtime pulls from the registry; for an air-gapped site add their OCI archives to the bundle as kind: image)",
            images_skipped.join(", ")
        ));
    }
    Ok(said)
}

/// Checks every file of a bundle directory against its manifest.
pub fn verify(dir: &Path) -> Result<usize, Vec<String>> {
    let b = BundleDir::open(dir).map_err(|e| vec![e])?;
    let problems = b.verify();
    if problems.is_empty() {
        Ok(b.manifest.files.len())
    } else {
        Err(problems)
    }
}
