//! Reading files from a host (existing certificates, kubeconfigs) in one round trip. What is read
//! stays in memory: it may be key material.

use crate::ssh::{Session, SshError, shell_quote};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::BTreeMap;

/// The files among `paths` that exist, by path.
pub async fn read_files(
    session: &Session,
    paths: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, SshError> {
    if paths.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut script = format!("# provision: read {} file(s)\n", paths.len());
    for (i, p) in paths.iter().enumerate() {
        let q = shell_quote(p);
        script.push_str(&format!(
            "if [ -f {q} ]; then printf '{i} '; base64 -w0 < {q}; echo; fi\n"
        ));
    }
    let out = session.run(&script).await?;
    let mut files = BTreeMap::new();
    for line in out.lines() {
        let Some((i, data)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(i), Ok(bytes)) = (i.parse::<usize>(), B64.decode(data.trim())) else {
            return Err(SshError::Channel {
                host: session.host().to_string(),
                detail: "unreadable file listing from the host".into(),
            });
        };
        if let Some(p) = paths.get(i) {
            files.insert(p.clone(), bytes);
        }
    }
    Ok(files)
}
