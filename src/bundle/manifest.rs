//! `bundle.yaml`: the manifest of a bundle directory (the air-gapped source). It lists every
//! file a host may receive, by component, version and architecture, with its sha256.
//!
//! ```yaml
//! apiVersion: provision/v1alpha1
//! kind: Bundle
//! files:
//! - component: etcd
//!   version: 3.6.14
//!   arch: amd64
//!   file: etcd/3.6.14/amd64/etcd     # relative to the bundle directory
//!   sha256: 3b1e...
//!   kind: binary                     # optional: binary, cni-plugin, tree, image
//! ```

use crate::catalog::digest::{Algo, Digest};
use crate::catalog::{self, Install};
use crate::inventory::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "bundle.yaml";
pub const API_VERSION: &str = "provision/v1alpha1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    pub files: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Binary,
    CniPlugin,
    Tree,
    Image,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub component: String,
    pub version: String,
    pub arch: Arch,
    pub file: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

impl Entry {
    /// The entry's kind: written, or what the catalog says of its component (binary otherwise).
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or_else(
            || match catalog::component(&self.component).map(|c| c.install) {
                Some(Install::CniPlugins) => Kind::CniPlugin,
                Some(Install::Tree { .. }) => Kind::Tree,
                Some(Install::Image) => Kind::Image,
                _ => Kind::Binary,
            },
        )
    }

    /// Where the file goes under its component's versioned directory: the path after
    /// `<component>/<version>/<arch>/`, or the file name.
    pub fn install_path(&self) -> String {
        let prefix = format!("{}/{}/{}/", self.component, self.version, self.arch);
        match self.file.strip_prefix(&prefix) {
            Some(rest) if self.kind() == Kind::Tree => rest.to_string(),
            _ => Path::new(&self.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

/// A bundle directory and its parsed manifest.
#[derive(Debug, Clone)]
pub struct BundleDir {
    pub root: PathBuf,
    pub manifest: Manifest,
}

impl BundleDir {
    pub fn open(root: &Path) -> Result<BundleDir, String> {
        let path = root.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e}; a bundle directory holds {FILE_NAME} (write one with `provision bundle pack`)",
                path.display()
            )
        })?;
        let manifest: Manifest = serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            format!("{}{at}: {e}", path.display())
        })?;
        if manifest.api_version != API_VERSION || manifest.kind != "Bundle" {
            return Err(format!(
                "{}: expected apiVersion {API_VERSION} and kind Bundle",
                path.display()
            ));
        }
        for (i, e) in manifest.files.iter().enumerate() {
            let bad_path = e.file.starts_with('/') || e.file.split('/').any(|p| p == "..");
            if bad_path {
                return Err(format!(
                    "{}: files[{i}].file \"{}\" must be a path inside the bundle directory",
                    path.display(),
                    e.file
                ));
            }
            Digest::parse(&e.sha256)
                .map_err(|m| format!("{}: files[{i}].sha256: {m}", path.display()))?;
        }
        Ok(BundleDir {
            root: root.to_path_buf(),
            manifest,
        })
    }

    pub fn path_of(&self, e: &Entry) -> PathBuf {
        self.root.join(&e.file)
    }

    /// Every file checked against its digest; the problems, one line each.
    pub fn verify(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for e in &self.manifest.files {
            let path = self.path_of(e);
            match Digest::of_file(Algo::Sha256, &path) {
                Ok(d) if d.hex == e.sha256.trim_start_matches("sha256:") => {}
                Ok(d) => problems.push(format!(
                    "{} ({} {} {}): sha256 is {}, the manifest says {}",
                    e.file, e.component, e.version, e.arch, d.hex, e.sha256
                )),
                Err(err) => problems.push(format!("{}: {err}", e.file)),
            }
        }
        problems
    }

    /// The versions the bundle holds of a component for an architecture.
    pub fn versions(&self, component: &str, arch: Arch) -> Vec<String> {
        let mut v: Vec<String> = self
            .manifest
            .files
            .iter()
            .filter(|e| e.component == component && e.arch == arch)
            .map(|e| e.version.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn entries<'a>(
        &'a self,
        component: &'a str,
        version: &'a str,
        arch: Arch,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.manifest
            .files
            .iter()
            .filter(move |e| e.component == component && e.version == version && e.arch == arch)
    }
}

pub fn render(files: Vec<Entry>) -> Result<String, String> {
    let m = Manifest {
        api_version: API_VERSION.into(),
        kind: "Bundle".into(),
        files,
    };
    let yaml = serde_yaml::to_string(&m).map_err(|e| format!("bundle.yaml: {e}"))?;
    Ok(format!(
        "# Written by provision. Check it with `provision bundle verify <dir>`.\n{yaml}"
    ))
}
