//! The vocabulary of change on a host. A phase returns a list of these; the executor compares them
//! with what the host has and changes only the difference.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    File(FileSpec),
    Dir {
        path: String,
        mode: u32,
        owner: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A kernel parameter set now; persist it with a File in /etc/sysctl.d.
    Sysctl {
        key: String,
        value: String,
    },
    Unit(UnitSpec),
    /// Nothing at the path: a file, link or directory tree there is removed, never across a
    /// mount point; a mount point itself (an operator's disk for /var/lib/etcd) is emptied.
    Absent {
        path: String,
    },
    /// Only where nothing declarative fits: `cmd` runs unless `unless` succeeds.
    Exec {
        /// Names the step in reports (`cmd` may be long).
        label: String,
        cmd: String,
        unless: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSpec {
    pub path: String,
    #[serde(skip)]
    pub content: Vec<u8>,
    pub mode: u32,
    pub owner: String,
    /// Never shown: not in dry-run diffs, not in logs.
    pub secret: bool,
    /// When set, the content is this file on the operator's machine, streamed on upload
    /// (artifacts too big to hold in memory); `content` is then empty.
    pub local: Option<LocalContent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalContent {
    pub path: std::path::PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl FileSpec {
    pub fn sha256(&self) -> String {
        match &self.local {
            Some(l) => l.sha256.clone(),
            None => sha256_hex(&self.content),
        }
    }

    pub fn size(&self) -> u64 {
        match &self.local {
            Some(l) => l.size,
            None => self.content.len() as u64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitSpec {
    pub name: String,
    pub enabled: bool,
    pub active: bool,
    /// The unit restarts when one of these paths changed in the same run.
    pub restart_when_changed: Vec<String>,
}

impl Action {
    pub fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Action {
        Action::File(FileSpec {
            path: path.into(),
            content: content.into(),
            mode,
            owner: "root:root".into(),
            secret: false,
            local: None,
        })
    }

    /// A file whose content is streamed from the operator's machine at upload time.
    pub fn local_file(path: &str, local: LocalContent, mode: u32) -> Action {
        Action::File(FileSpec {
            path: path.into(),
            content: Vec::new(),
            mode,
            owner: "root:root".into(),
            secret: false,
            local: Some(local),
        })
    }

    pub fn secret_file(path: &str, content: impl Into<Vec<u8>>) -> Action {
        Action::File(FileSpec {
            path: path.into(),
            content: content.into(),
            mode: 0o600,
            owner: "root:root".into(),
            secret: true,
            local: None,
        })
    }

    pub fn dir(path: &str, mode: u32) -> Action {
        Action::Dir {
            path: path.into(),
            mode,
            owner: "root:root".into(),
        }
    }

    pub fn symlink(path: &str, target: &str) -> Action {
        Action::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }

    pub fn sysctl(key: &str, value: &str) -> Action {
        Action::Sysctl {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn absent(path: &str) -> Action {
        Action::Absent { path: path.into() }
    }

    /// A short name for reports: the path, unit, key or label.
    pub fn subject(&self) -> &str {
        match self {
            Action::File(f) => &f.path,
            Action::Dir { path, .. } | Action::Symlink { path, .. } | Action::Absent { path } => {
                path
            }
            Action::Sysctl { key, .. } => key,
            Action::Unit(u) => &u.name,
            Action::Exec { label, .. } => label,
        }
    }
}

/// The sha256 of `data`, in hex (as `sha256sum` prints it).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}
