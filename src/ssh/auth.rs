//! Authentication: the identity file, else ssh-agent identities, else ~/.ssh/id_{ed25519,ecdsa,rsa};
//! RSA with the best hash the server offers; a key file readable by others is refused.

use super::*;

/// An explicit identity file, or else ssh-agent and then the usual key files.
pub(super) async fn authenticate(
    hop: &Hop<'_>,
    handle: &mut Handle<KeyChecker>,
) -> Result<(), SshError> {
    let mut tried = Vec::new();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let auth_err = |detail: String| SshError::Channel {
        host: hop.label.clone(),
        detail,
    };
    let files: Vec<PathBuf> = match hop.identity {
        Some(p) => vec![p.to_path_buf()],
        None => {
            if let Ok(mut agent) = AgentClient::connect_env().await
                && let Ok(ids) = agent.request_identities().await
            {
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    tried.push(format!("agent key {comment}"));
                    let r = handle
                        .authenticate_publickey_with(hop.user, key, rsa_hash, &mut agent)
                        .await;
                    if matches!(r, Ok(russh::client::AuthResult::Success)) {
                        return Ok(());
                    }
                }
            }
            let home = crate::inventory::expand_home("~/.ssh");
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| home.join(f))
                .filter(|p| p.is_file())
                .collect()
        }
    };
    for file in files {
        tried.push(file.display().to_string());
        let key = load_secret_key(&file, None).map_err(|e| SshError::Key {
            host: hop.label.clone(),
            file: file.clone(),
            detail: match e {
                russh::keys::Error::KeyIsEncrypted => {
                    "it is encrypted: add it to ssh-agent (ssh-add) and leave identityFile out"
                        .into()
                }
                other => other.to_string(),
            },
        })?;
        check_key_mode(hop, &file)?;
        let r = handle
            .authenticate_publickey(
                hop.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash),
            )
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        if r.success() {
            return Ok(());
        }
    }
    Err(SshError::Auth {
        host: hop.label.clone(),
        user: hop.user.to_string(),
        tried: if tried.is_empty() {
            "no key: no identityFile, no ssh-agent, no ~/.ssh/id_*".into()
        } else {
            tried.join(", ")
        },
    })
}

/// OpenSSH refuses private keys others can read; so do we.
pub(super) fn check_key_mode(hop: &Hop<'_>, file: &Path) -> Result<(), SshError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(SshError::Key {
            host: hop.label.clone(),
            file: file.to_path_buf(),
            detail: format!(
                "its mode is {mode:o}; others may read it: chmod 600 {}",
                file.display()
            ),
        });
    }
    Ok(())
}
