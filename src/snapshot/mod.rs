//! etcd snapshots (`provision etcd snapshot save|list`) and the backup archive (`provision
//! backup`): a snapshot from a healthy member, checked by etcdutl on the host, copied to the
//! operator's machine 0600 with its sha256 beside it; the archive adds what the snapshot is
//! useless without (the CAs, the service-account key, the Secrets encryption key). Beside each
//! snapshot, `.json` says which cluster it is of (its CA), so a restore can refuse another's.

pub mod archive;
pub mod restore;

use crate::cluster::Host;
use crate::phases::etcd::etcdctl;
use crate::run::Ctx;
use crate::ssh::shell_quote;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where snapshots are made, and kept when asked, on a control plane.
pub use crate::paths::ETCD_SNAPSHOT_DIR as HOST_DIR;

/// What etcdutl says of a snapshot file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: u64,
    #[serde(rename = "totalKey")]
    pub total_keys: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Serialize)]
pub struct Saved {
    /// The member it was taken from.
    pub host: String,
    pub path: PathBuf,
    pub sha256: String,
    pub status: SnapshotStatus,
    /// The copy left on the host, when kept.
    pub kept_on_host: Option<String>,
}

/// Where a snapshot came from: written beside it as `.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    pub cluster: String,
    /// sha256 of the cluster CA's certificate (PEM, trimmed): the cluster's identity.
    pub ca_sha256: String,
    pub sha256: String,
    pub taken_from: String,
    pub taken_at: String,
    pub status: SnapshotStatus,
}

/// The identity of a cluster: its CA certificate's sha256.
pub fn ca_sha256(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.trim().as_bytes()))
}

/// `snapshot.db.json` beside `snapshot.db`.
pub fn provenance_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

/// `20261202T160405Z`: now, in UTC, as file names sort.
pub fn stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A snapshot file's name: the cluster's, and when.
pub fn file_name(cluster: &str) -> String {
    format!("{cluster}-etcd-{}.db", stamp())
}

/// A backup archive's name: it holds the cluster's keys, and says so.
pub fn backup_name(cluster: &str) -> String {
    format!("{cluster}-backup-{}.secret.tar", stamp())
}

/// The first control plane whose etcd member answers a health check.
async fn healthy_member(ctx: &Ctx) -> Result<&Host, String> {
    let mut said = Vec::new();
    for host in ctx.cluster.control_planes() {
        let answer = match ctx.session(host).await {
            Ok(s) => s
                .run(&etcdctl("endpoint health"))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(_) => return Ok(host),
            Err(e) => said.push(format!(
                "{}: {}",
                host.name,
                e.lines().last().unwrap_or_default()
            )),
        }
    }
    Err(format!(
        "no healthy etcd member to take a snapshot from ({})",
        if said.is_empty() {
            "the inventory has no control plane".into()
        } else {
            said.join("; ")
        }
    ))
}

/// Takes a snapshot on a healthy member, checks it there, and copies it to `local`.
pub async fn save(ctx: &Ctx, local: &Path, keep_on_host: bool) -> Result<Saved, String> {
    let host = healthy_member(ctx).await?;
    let ca = ctx.ca(crate::pki::CaKind::Kubernetes, false).await?;
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file_name(&ctx.cluster.name));
    let remote = format!("{HOST_DIR}/{name}");
    let q = shell_quote(&remote);
    // a large database takes longer than etcdctl's usual 5 s (the later flag wins)
    let save = etcdctl(&format!(
        "--command-timeout=600s snapshot save {}",
        shell_quote(&format!("{remote}.part"))
    ));
    let script = format!(
        "set -e; umask 077; mkdir -p {HOST_DIR}; chmod 0700 {HOST_DIR}\n\
         {save} >/dev/null\n\
         mv {q}.part {q}\n\
         etcdutl snapshot status {q} -w json\n\
         sha256sum {q} | cut -d' ' -f1"
    );
    let out = session
        .run(&script)
        .await
        .map_err(|e| format!("{}: the snapshot failed: {e}", host.name))?;
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let status: SnapshotStatus = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("{}: etcdutl gave no status: {out}", host.name))?;
    let remote_sha = lines.next().unwrap_or_default().trim().to_string();
    let copied = session
        .exec(&format!("cat {q}"), None)
        .await
        .map_err(|e| format!("{}: cannot copy {remote}: {e}", host.name))?;
    let sha256 = hex::encode(Sha256::digest(&copied.stdout));
    if copied.status != 0 || sha256 != remote_sha {
        return Err(format!(
            "{}: the copy of {remote} does not match its sha256 on the host ({sha256} here, {remote_sha} there): run again",
            host.name
        ));
    }
    crate::local::write_private(local, &copied.stdout)?;
    crate::local::write_private(
        &sha256_path(local),
        format!("{sha256}  {name}\n").as_bytes(),
    )?;
    let provenance = Provenance {
        cluster: ctx.cluster.name.clone(),
        ca_sha256: ca_sha256(&ca.cert_pem),
        sha256: sha256.clone(),
        taken_from: host.name.clone(),
        taken_at: stamp(),
        status: status.clone(),
    };
    let json = serde_json::to_string_pretty(&provenance).map_err(|e| e.to_string())?;
    crate::local::write_private(&provenance_path(local), json.as_bytes())?;
    let kept_on_host = if keep_on_host {
        Some(remote)
    } else {
        session
            .run(&format!("rm -f {q}"))
            .await
            .map_err(|e| e.to_string())?;
        None
    };
    Ok(Saved {
        host: host.name.clone(),
        path: local.to_path_buf(),
        sha256,
        status,
        kept_on_host,
    })
}

/// `snapshot.db.sha256` beside `snapshot.db`.
pub fn sha256_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".sha256");
    PathBuf::from(p)
}

/// A snapshot kept on a control plane.
#[derive(Debug, Serialize)]
pub struct Kept {
    pub host: String,
    pub path: String,
    pub bytes: u64,
    pub age_seconds: u64,
    /// None when etcdutl cannot read it.
    pub status: Option<SnapshotStatus>,
}

/// The snapshots kept on every control plane, newest first per host.
pub async fn list(ctx: &Ctx) -> Result<Vec<Kept>, String> {
    let mut kept = Vec::new();
    let mut dirs = vec![HOST_DIR.to_string()];
    if let Some(s) = &ctx.cluster.etcd_snapshots
        && s.dir != HOST_DIR
    {
        dirs.push(s.dir.clone());
    }
    let globs: Vec<String> = dirs.iter().map(|d| format!("{d}/*.db")).collect();
    for host in ctx.cluster.control_planes() {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        // one line per file: size, mtime, path, then etcdutl's status (or nothing)
        let script = format!(
            "now=$(date +%s); for f in $(ls -t {} 2>/dev/null); do \
               echo \"file $(stat -c '%s %Y' \"$f\") $now $f\"; \
               echo \"status $(etcdutl snapshot status \"$f\" -w json 2>/dev/null)\"; done; true",
            globs.join(" ")
        );
        let out = session.run(&script).await.map_err(|e| e.to_string())?;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("file ") {
                let w: Vec<&str> = rest.splitn(4, ' ').collect();
                if let [size, mtime, now, path] = w[..] {
                    let (mtime, now): (u64, u64) =
                        (mtime.parse().unwrap_or(0), now.parse().unwrap_or(0));
                    kept.push(Kept {
                        host: host.name.clone(),
                        path: path.to_string(),
                        bytes: size.parse().unwrap_or(0),
                        age_seconds: now.saturating_sub(mtime),
                        status: None,
                    });
                }
            } else if let Some(json) = line.strip_prefix("status ")
                && let Some(last) = kept.last_mut()
            {
                last.status = serde_json::from_str(json).ok();
            }
        }
    }
    Ok(kept)
}

/// The files a snapshot cannot be used without: the CAs and their keys, the service-account
/// key pair, the Secrets encryption key.
fn secret_files() -> Vec<String> {
    use crate::paths::{ENCRYPTION_CONFIG, pki};
    let mut files: Vec<String> = crate::pki::CaKind::ALL
        .iter()
        .flat_map(|k| [pki(k.base(), "crt"), pki(k.base(), "key")])
        .collect();
    files.push(pki("sa", "key"));
    files.push(pki("sa", "pub"));
    files.push(ENCRYPTION_CONFIG.to_string());
    files
}

/// What `backup` wrote.
#[derive(Debug, Serialize)]
pub struct Backup {
    pub path: PathBuf,
    pub snapshot: Saved,
    pub files: Vec<String>,
}

/// A snapshot plus the cluster's keys in one tar archive at `archive` (0600). The snapshot
/// is taken beside it and then moved inside.
pub async fn backup(ctx: &Ctx, archive: &Path) -> Result<Backup, String> {
    let (first, files) = ctx.read_seed(&secret_files()).await?;
    let missing: Vec<String> = secret_files()
        .into_iter()
        .filter(|f| !files.contains_key(f))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{first} lacks {}: a backup without them could not be restored",
            missing.join(", ")
        ));
    }
    let snapshot_path = archive.with_extension("snapshot.db");
    let snapshot = save(ctx, &snapshot_path, false).await?;
    let db = std::fs::read(&snapshot_path)
        .map_err(|e| format!("cannot read {}: {e}", snapshot_path.display()))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| -> Result<(), String> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
            .map_err(|e| format!("cannot write the archive: {e}"))
    };
    let manifest = serde_json::json!({
        "cluster": ctx.cluster.name,
        "kubernetesVersion": ctx.cluster.version.to_string(),
        "snapshot": {"file": "etcd/snapshot.db", "sha256": snapshot.sha256,
                     "revision": snapshot.status.revision, "keys": snapshot.status.total_keys,
                     "from": snapshot.host},
        "files": files.keys().collect::<Vec<_>>(),
    });
    add(
        "backup.json",
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    add("etcd/snapshot.db", &db)?;
    for (path, bytes) in &files {
        add(path.trim_start_matches('/'), bytes)?;
    }
    let provenance = std::fs::read(provenance_path(&snapshot_path))
        .map_err(|e| format!("cannot read the snapshot's provenance: {e}"))?;
    add("etcd/snapshot.db.json", &provenance)?;
    let bytes = tar
        .into_inner()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    crate::local::write_private(archive, &bytes)?;
    for p in [
        snapshot_path.clone(),
        sha256_path(&snapshot_path),
        provenance_path(&snapshot_path),
    ] {
        let _ = std::fs::remove_file(p);
    }
    Ok(Backup {
        path: archive.to_path_buf(),
        snapshot,
        files: files.into_keys().collect(),
    })
}
