//! `provision restore --from ARCHIVE`: a cluster back from a `provision backup` archive on
//! control planes that hold no cluster (reset, or new machines the inventory names). The
//! archive's CAs, service-account keys and Secrets key go to the seed control plane first, so
//! `init` brings it up with them (every kubeconfig of the old cluster stays valid: same CA); then
//! the archive's snapshot is restored into its etcd as a cluster of one, and `join` brings the
//! other hosts back (their Nodes are in the snapshot, their pod CIDRs with them).

use super::{Provenance, ca_sha256, provenance_path, secret_files, sha256_path};
use crate::cluster::Host;
use crate::host::{Action, executor};
use crate::run::Ctx;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const SNAPSHOT: &str = "etcd/snapshot.db";
const PROVENANCE: &str = "etcd/snapshot.db.json";

/// A backup archive, read and checked.
pub struct Archive {
    /// The cluster's keys by their path on a control plane.
    pub files: BTreeMap<String, Vec<u8>>,
    pub snapshot: Vec<u8>,
    pub provenance: Provenance,
}

/// Reads `path` and checks it whole: every key file there, the snapshot the one its provenance
/// describes (sha256), of the cluster whose CA the archive holds.
pub fn read(path: &Path) -> Result<Archive, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut entries = BTreeMap::new();
    let mut tar = tar::Archive::new(file);
    for entry in tar
        .entries()
        .map_err(|e| format!("{shown} is not a backup archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("{shown} is damaged: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("{shown} is damaged: {e}"))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{shown} is damaged (truncated?): {e}"))?;
        entries.insert(name, bytes);
    }
    let mut take = |name: &str| {
        entries.remove(name).ok_or_else(|| {
            format!("{shown} lacks {name}: it is not a whole `provision backup` archive")
        })
    };
    let snapshot = take(SNAPSHOT)?;
    let provenance: Provenance = serde_json::from_slice(&take(PROVENANCE)?)
        .map_err(|e| format!("{shown}: {PROVENANCE}: {e}"))?;
    let mut files = BTreeMap::new();
    for f in secret_files() {
        files.insert(f.clone(), take(f.trim_start_matches('/'))?);
    }
    if hex::encode(Sha256::digest(&snapshot)) != provenance.sha256 {
        return Err(format!(
            "{shown}: its snapshot is not the one it describes (another sha256: truncated or changed)"
        ));
    }
    let ca = crate::paths::pki("ca", "crt");
    let ca_pem = String::from_utf8_lossy(files.get(&ca).map(Vec::as_slice).unwrap_or_default());
    if ca_sha256(&ca_pem) != provenance.ca_sha256 {
        return Err(format!(
            "{shown}: its snapshot is of another cluster than its CA ({})",
            provenance.cluster
        ));
    }
    Ok(Archive {
        files,
        snapshot,
        provenance,
    })
}

impl Archive {
    /// Writes the snapshot with its sha256 and provenance into `dir`, as `etcd snapshot save`
    /// leaves them, for the restore; returns the snapshot's path.
    pub fn unpack_snapshot(&self, dir: &Path) -> Result<PathBuf, String> {
        let path = dir.join("snapshot.db");
        let json = serde_json::to_string_pretty(&self.provenance).map_err(|e| e.to_string())?;
        crate::local::write_private(&path, &self.snapshot)?;
        crate::local::write_private(
            &sha256_path(&path),
            format!("{}  snapshot.db\n", self.provenance.sha256).as_bytes(),
        )?;
        crate::local::write_private(&provenance_path(&path), json.as_bytes())?;
        Ok(path)
    }

    /// The key files as the seed gets them: private keys and the Secrets key 0600.
    fn actions(&self) -> Vec<Action> {
        self.files
            .iter()
            .map(|(path, bytes)| {
                if path.ends_with(".crt") || path.ends_with(".pub") {
                    Action::file(path, bytes.clone(), 0o644)
                } else {
                    Action::secret_file(path, bytes.clone())
                }
            })
            .collect()
    }
}

/// Refuses control planes that hold a cluster already: another CA, or etcd data (a running
/// cluster of this CA is restored with `etcd snapshot restore` instead).
pub async fn refuse_existing(ctx: &Ctx, archive: &Archive) -> Result<(), String> {
    let ca = crate::paths::pki("ca", "crt");
    let ours = archive
        .files
        .get(&ca)
        .map(|b| ca_sha256(&String::from_utf8_lossy(b)));
    for h in ctx.cluster.control_planes() {
        let session = ctx.session(h).await.map_err(|e| e.to_string())?;
        let files = crate::host::read::read_files(&session, std::slice::from_ref(&ca))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(theirs) = files
            .get(&ca)
            .map(|b| ca_sha256(&String::from_utf8_lossy(b)))
            && Some(&theirs) != ours.as_ref()
        {
            return Err(format!(
                "{} holds another cluster (another CA): reset it first (`provision reset`); nothing was changed",
                h.name
            ));
        }
        let data = session
            .exec(
                &format!("test -d {}/member", crate::phases::etcd::DATA_DIR),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        if data.status == 0 {
            return Err(format!(
                "{} has etcd data already: to put a running cluster back to the archive's snapshot, use `provision etcd snapshot restore --from SNAPSHOT` (a backup archive holds one as etcd/snapshot.db); to rebuild from the archive, reset the cluster first; nothing was changed",
                h.name
            ));
        }
    }
    Ok(())
}

/// Puts the archive's keys on `seed`; returns the changes made.
pub async fn import(ctx: &Ctx, seed: &Host, archive: &Archive) -> Result<Vec<String>, String> {
    let session = ctx.session(seed).await.map_err(|e| e.to_string())?;
    let mut actions = vec![
        Action::dir(crate::paths::KUBERNETES_DIR, 0o755),
        Action::dir(crate::paths::PKI_DIR, 0o755),
        Action::dir(crate::paths::ETCD_PKI_DIR, 0o755),
    ];
    actions.extend(archive.actions());
    let plan = executor::plan(&session, &actions)
        .await
        .map_err(|e| e.to_string())?;
    let applied = executor::apply(&session, &actions, &plan)
        .await
        .map_err(|e| e.to_string())?;
    Ok(applied.changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entries = BTreeMap<String, Vec<u8>>;
    type Spoil<'a> = &'a dyn Fn(&mut Entries);

    /// An archive as `backup` writes it, after `spoil` had its way with the entries.
    fn archive(dir: &Path, spoil: impl Fn(&mut Entries)) -> Result<PathBuf, String> {
        let ca = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
        let snapshot = b"etcd's bytes".to_vec();
        let provenance = serde_json::json!({
            "cluster": "prod", "ca_sha256": ca_sha256(ca),
            "sha256": hex::encode(Sha256::digest(&snapshot)),
            "taken_from": "cp1", "taken_at": "2026-12-04T18:00:00Z",
            "status": {"hash": 1, "revision": 42, "totalKey": 7, "totalSize": 12}
        });
        let mut entries: Entries = secret_files()
            .into_iter()
            .map(|f| (f.trim_start_matches('/').to_string(), b"key".to_vec()))
            .collect();
        entries.insert("etc/kubernetes/pki/ca.crt".into(), ca.as_bytes().to_vec());
        entries.insert(SNAPSHOT.into(), snapshot);
        entries.insert(PROVENANCE.into(), provenance.to_string().into_bytes());
        entries.insert("backup.json".into(), b"{}".to_vec());
        spoil(&mut entries);
        let mut tar = tar::Builder::new(Vec::new());
        for (name, bytes) in &entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        let path = dir.join("backup.secret.tar");
        let bytes = tar.into_inner().map_err(|e| e.to_string())?;
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        Ok(path)
    }

    #[test]
    fn a_whole_archive_is_read_with_its_keys_by_their_path_on_a_host() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let read = read(&archive(dir.path(), |_| {})?)?;
        assert_eq!(read.provenance.status.revision, 42);
        assert_eq!(read.files.len(), secret_files().len());
        assert!(
            read.files
                .contains_key("/etc/kubernetes/encryption-config.yaml")
        );
        // what the restore reads: the snapshot with its sha256 and provenance beside it
        let snap = read.unpack_snapshot(dir.path())?;
        assert_eq!(
            std::fs::read(&snap).map_err(|e| e.to_string())?,
            b"etcd's bytes"
        );
        let sums = std::fs::read_to_string(sha256_path(&snap)).map_err(|e| e.to_string())?;
        assert!(sums.starts_with(&read.provenance.sha256), "{sums}");
        Ok(())
    }

    #[test]
    fn a_damaged_or_mismatched_archive_is_refused_saying_why() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cases: [(Spoil, &str); 3] = [
            (
                &|e| {
                    e.remove("etc/kubernetes/pki/sa.key");
                },
                "lacks etc/kubernetes/pki/sa.key",
            ),
            (
                &|e| {
                    e.insert(SNAPSHOT.into(), b"etcd's".to_vec());
                },
                "its snapshot is not the one it describes",
            ),
            (
                &|e| {
                    e.insert("etc/kubernetes/pki/ca.crt".into(), b"another CA".to_vec());
                },
                "of another cluster than its CA",
            ),
        ];
        for (spoil, why) in cases {
            let err = read(&archive(dir.path(), spoil)?)
                .err()
                .ok_or("a spoiled archive was read")?;
            assert!(err.contains(why), "{err}");
        }
        // half an archive
        let whole = std::fs::read(archive(dir.path(), |_| {})?).map_err(|e| e.to_string())?;
        let cut = dir.path().join("cut.tar");
        std::fs::write(&cut, &whole[..whole.len() / 3]).map_err(|e| e.to_string())?;
        assert!(read(&cut).is_err());
        Ok(())
    }
}
