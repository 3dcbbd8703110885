//! The lock file beside the inventory: digests learnt from upstream's published `.sha256` files
//! on the first download, so every later fetch is pinned to the same bytes.

use crate::catalog::digest::Digest;
use crate::inventory::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockFile {
    pub api_version: String,
    pub kind: String,
    pub artifacts: Vec<Locked>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    pub component: String,
    pub version: String,
    pub arch: Arch,
    pub url: String,
    pub digest: Digest,
}

/// `cluster.yaml` → `cluster.lock.yaml`, in the same directory.
pub fn path_for(inventory: &Path) -> PathBuf {
    let stem = inventory
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "inventory".into());
    inventory.with_file_name(format!("{stem}.lock.yaml"))
}

impl LockFile {
    pub fn load(path: &Path) -> Result<LockFile, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str(&text).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!(":{}:{}", l.line(), l.column()))
                    .unwrap_or_default();
                format!(
                    "{}{at}: {e}; fix it, or delete it to learn the digests again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn get(&self, component: &str, version: &str, arch: Arch) -> Option<&Digest> {
        self.artifacts
            .iter()
            .find(|l| l.component == component && l.version == version && l.arch == arch)
            .map(|l| &l.digest)
    }

    /// Records a digest; false when it was already there.
    pub fn add(&mut self, entry: Locked) -> bool {
        if self
            .get(&entry.component, &entry.version, entry.arch)
            .is_some()
        {
            return false;
        }
        self.artifacts.push(entry);
        self.artifacts.sort_by(|a, b| {
            (&a.component, &a.version, a.arch).cmp(&(&b.component, &b.version, b.arch))
        });
        true
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let body = LockFile {
            api_version: "provision/v1alpha1".into(),
            kind: "BundleLock".into(),
            artifacts: self.artifacts.clone(),
        };
        let text = format!(
            "# Digests provision verified on first download; later fetches must match them.\n# Keep this file with the inventory.\n{}",
            serde_yaml::to_string(&body).map_err(|e| e.to_string())?
        );
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}
