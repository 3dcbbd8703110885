//! The admin kubeconfig on the operator's machine: written 0600, updated in place for the same
//! cluster, and never silently put over another cluster's file.

use crate::pki::kubeconfig;
use std::path::Path;

/// Writes `content` to `path`; returns a line for the user saying where it went.
pub fn write(path: &Path, content: &[u8]) -> Result<String, String> {
    let new_text = String::from_utf8_lossy(content);
    let new = kubeconfig::parse(&new_text)?;
    match std::fs::read_to_string(path) {
        Ok(old) if old.as_bytes() == content => {
            return Ok(format!("admin kubeconfig: {} (unchanged)", path.display()));
        }
        Ok(old) => match kubeconfig::parse(&old) {
            Ok(o) if o.ca_pem.trim() == new.ca_pem.trim() => {}
            _ => {
                return Err(format!(
                    "{} holds a kubeconfig of another cluster (or not a kubeconfig): move it away and run again; it was left as it is",
                    path.display()
                ));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    crate::local::write_private(path, content)?;
    Ok(format!(
        "admin kubeconfig written to {} (kubectl --kubeconfig {} get nodes)",
        path.display(),
        path.display()
    ))
}
