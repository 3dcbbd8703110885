//! The operator's download cache, content-addressed by the digest each download was verified
//! against: `blobs/<algo>/<hex>`, `partial/` for interrupted downloads, and `unpacked/` for the
//! files taken out of archives (hosts receive plain files).

use crate::catalog::digest::{Algo, Digest};
use crate::catalog::{Install, Packaging};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub struct Cache {
    pub root: PathBuf,
}

/// A file ready to ship, with the path it takes under its component's versioned directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedFile {
    pub rel: String,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub mode: u32,
}

impl Cache {
    /// `$PROVISION_CACHE_DIR`, else `$XDG_CACHE_HOME/provision`, else `~/.cache/provision`.
    pub fn locate() -> Result<Cache, String> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = env("PROVISION_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("provision")))
            .or_else(|| env("HOME").map(|p| p.join(".cache/provision")))
            .ok_or("no cache directory: set PROVISION_CACHE_DIR or HOME")?;
        Ok(Cache { root })
    }

    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algo.name()).join(&d.hex)
    }

    pub fn partial(&self, d: &Digest) -> PathBuf {
        self.root
            .join("partial")
            .join(format!("{}-{}", d.algo.name(), d.hex))
    }

    fn unpacked(&self, d: &Digest) -> PathBuf {
        self.root
            .join("unpacked")
            .join(format!("{}-{}", d.algo.name(), d.hex))
    }

    /// The files a host installs from the verified download `d`.
    pub fn files_of(
        &self,
        d: &Digest,
        packaging: Packaging,
        install: Install,
        what: &str,
    ) -> Result<Vec<CachedFile>, String> {
        let blob = self.blob(d);
        match packaging {
            Packaging::File | Packaging::Image => {
                let name = match install {
                    Install::Bin { names, .. } => names[0].to_string(),
                    _ => blob_name(&blob),
                };
                let size = std::fs::metadata(&blob)
                    .map_err(|e| format!("{}: {e}", blob.display()))?
                    .len();
                let sha256 = match d.algo {
                    Algo::Sha256 => d.hex.clone(),
                    Algo::Sha512 => memo_sha256(&blob)?,
                };
                let mode = if packaging == Packaging::Image {
                    0o644
                } else {
                    0o755
                };
                Ok(vec![CachedFile {
                    rel: name,
                    path: blob,
                    sha256,
                    size,
                    mode,
                }])
            }
            Packaging::TarGz | Packaging::TarZst => {
                let all = self.unpack(d, packaging)?;
                select(all, install, what)
            }
        }
    }

    /// Unpacks an archive once; later calls read the index written beside its files.
    fn unpack(&self, d: &Digest, packaging: Packaging) -> Result<Vec<CachedFile>, String> {
        let dir = self.unpacked(d);
        let index = dir.join(".index.json");
        if let Ok(text) = std::fs::read_to_string(&index)
            && let Ok(files) = serde_json::from_str::<Vec<CachedFile>>(&text)
        {
            return Ok(files);
        }
        let blob = self.blob(d);
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let file = std::fs::File::open(&blob).map_err(|e| format!("{}: {e}", blob.display()))?;
        let reader: Box<dyn std::io::Read> = match packaging {
            Packaging::TarGz => Box::new(flate2::read::GzDecoder::new(file)),
            _ => Box::new(
                zstd::stream::read::Decoder::new(file)
                    .map_err(|e| format!("{}: {e}", blob.display()))?,
            ),
        };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        let mut rels = Vec::new();
        for entry in archive
            .entries()
            .map_err(|e| format!("{}: {e}", blob.display()))?
        {
            let mut entry = entry.map_err(|e| format!("{}: {e}", blob.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .map_err(|e| format!("{}: {e}", blob.display()))?
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect::<PathBuf>();
            if rel.as_os_str().is_empty() {
                continue;
            }
            // unpack_in refuses paths that would leave `tmp`
            if entry
                .unpack_in(&tmp)
                .map_err(|e| format!("{}: {e}", blob.display()))?
            {
                rels.push((rel, entry.header().mode().unwrap_or(0o644)));
            }
        }
        let mut files = Vec::new();
        for (rel, mode) in rels {
            let final_path = dir.join(&rel);
            let tmp_path = tmp.join(&rel);
            let digest = Digest::of_file(Algo::Sha256, &tmp_path)
                .map_err(|e| format!("{}: {e}", tmp_path.display()))?;
            let size = std::fs::metadata(&tmp_path).map(|m| m.len()).unwrap_or(0);
            files.push(CachedFile {
                rel: rel.to_string_lossy().into_owned(),
                path: final_path,
                sha256: digest.hex,
                size,
                mode: mode & 0o7777,
            });
        }
        let index = serde_json::to_vec(&files)
            .map_err(|e| format!("{}: the file index: {e}", tmp.display()))?;
        std::fs::write(tmp.join(".index.json"), index)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(files)
    }
}

/// Picks what the host installs out of an archive's files.
fn select(all: Vec<CachedFile>, install: Install, what: &str) -> Result<Vec<CachedFile>, String> {
    let base = |f: &CachedFile| {
        Path::new(&f.rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match install {
        Install::Bin { names, required } => {
            let mut out = Vec::new();
            for (i, name) in names.iter().enumerate() {
                // the shallowest match: `bin/ctr` rather than some `contrib/.../ctr`
                let found = all
                    .iter()
                    .filter(|f| base(f) == *name)
                    .min_by_key(|f| f.rel.matches('/').count());
                match found {
                    Some(f) => out.push(CachedFile {
                        rel: name.to_string(),
                        mode: 0o755,
                        ..f.clone()
                    }),
                    None if i < required => {
                        return Err(format!("the archive of {what} holds no file named {name}"));
                    }
                    None => {}
                }
            }
            Ok(out)
        }
        Install::CniPlugins => {
            let out: Vec<CachedFile> = all
                .into_iter()
                .filter(|f| f.mode & 0o111 != 0)
                .map(|f| CachedFile {
                    rel: base(&f),
                    mode: 0o755,
                    ..f
                })
                .collect();
            if out.is_empty() {
                return Err(format!("the archive of {what} holds no executable plugin"));
            }
            Ok(out)
        }
        Install::Tree { root, .. } => {
            let prefix = format!("{root}/");
            let out: Vec<CachedFile> = all
                .into_iter()
                .filter_map(|f| {
                    let rel = f.rel.strip_prefix(&prefix)?.to_string();
                    Some(CachedFile { rel, ..f })
                })
                .collect();
            if out.is_empty() {
                return Err(format!("the archive of {what} holds nothing under {root}/"));
            }
            Ok(out)
        }
        Install::Image => Err(format!("{what}: an image is not an archive to unpack")),
    }
}

fn blob_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The sha256 of a blob known by another digest, computed once and kept beside it.
fn memo_sha256(blob: &Path) -> Result<String, String> {
    let memo = blob.with_extension("sha256");
    if let Ok(s) = std::fs::read_to_string(&memo)
        && s.len() == 64
    {
        return Ok(s);
    }
    let d = Digest::of_file(Algo::Sha256, blob).map_err(|e| format!("{}: {e}", blob.display()))?;
    let _ = std::fs::write(&memo, &d.hex);
    Ok(d.hex)
}
