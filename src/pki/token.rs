//! Bootstrap tokens (`[a-z0-9]{6}.[a-z0-9]{16}`) for kubelet TLS bootstrap, their Secret, and the
//! CA public-key pin joining nodes use to trust the API server before they have credentials.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::*;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The group kubeadm gives its node bootstrap tokens; the TLS-bootstrap RBAC binds to it.
pub const NODE_BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    secret: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the id is public (it names the Secret); the secret half is not
        write!(
            f,
            "BootstrapToken({}.<redacted>, ttl {:?})",
            self.id, self.ttl
        )
    }
}

fn random_chars(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl BootstrapToken {
    pub fn generate(ttl: Duration) -> BootstrapToken {
        BootstrapToken {
            id: random_chars(6),
            secret: random_chars(16),
            ttl,
        }
    }

    pub fn parse(text: &str, ttl: Duration) -> Result<BootstrapToken, String> {
        let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
        match text.split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(BootstrapToken {
                id: id.into(),
                secret: secret.into(),
                ttl,
            }),
            _ => Err("a bootstrap token looks like abcdef.0123456789abcdef".into()),
        }
    }

    /// `id.secret`: a credential; never print it.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret the bootstrap phase applies in kube-system.
    pub fn secret(&self, now: SystemTime) -> Secret {
        let expiration = ::time::OffsetDateTime::from(now + self.ttl)
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&::time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let data: BTreeMap<String, String> = [
            (
                "description",
                "node bootstrap token made by provision".to_string(),
            ),
            ("token-id", self.id.clone()),
            ("token-secret", self.secret.clone()),
            ("expiration", expiration),
            ("usage-bootstrap-authentication", "true".into()),
            ("usage-bootstrap-signing", "true".into()),
            ("auth-extra-groups", NODE_BOOTSTRAP_GROUP.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{}", self.id)),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            string_data: Some(data),
            ..Default::default()
        }
    }
}

/// `sha256:<hex>` of the CA's SubjectPublicKeyInfo: kubeadm's `--discovery-token-ca-cert-hash`.
pub fn ca_pin(ca_cert_pem: &str) -> Result<String, String> {
    let (_, pem) = parse_x509_pem(ca_cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.public_key().raw))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn tokens_have_the_bootstrap_shape_and_hide_their_secret() -> R {
        let t = BootstrapToken::generate(Duration::from_secs(3600));
        let full = t.expose();
        assert_eq!(full.len(), 23);
        assert!(BootstrapToken::parse(&full, t.ttl).is_ok());
        let shown = format!("{t:?}");
        assert!(!shown.contains(&full[7..]), "{shown}");
        assert!(BootstrapToken::parse("ABCDEF.0123456789abcdef", t.ttl).is_err());
        assert!(BootstrapToken::parse("abcdef.0123", t.ttl).is_err());
        Ok(())
    }

    #[test]
    fn the_ca_pin_is_the_sha256_of_the_public_key_as_openssl_computes_it() -> R {
        let ca = crate::pki::Ca::generate(
            crate::pki::CaKind::Kubernetes,
            crate::inventory::KeyType::EcdsaP256,
            10,
        )?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, &ca.cert_pem)?;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum | cut -c1-64",
                file.display()
            ))
            .output()
            ?;
        let expected = format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(ca_pin(&ca.cert_pem)?, expected);
        Ok(())
    }

    #[test]
    fn the_secret_is_what_the_bootstrap_authenticator_reads() -> R {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef", Duration::from_secs(86400))?;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = t.secret(now);
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let d = s.string_data.ok_or("a Secret without stringData")?;
        assert_eq!(d["token-secret"], "0123456789abcdef");
        assert_eq!(d["expiration"], "2027-01-16T08:00:00Z");
        assert_eq!(d["auth-extra-groups"], NODE_BOOTSTRAP_GROUP);
        Ok(())
    }
}
