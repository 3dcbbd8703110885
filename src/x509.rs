//! Certificate facts that need nothing of the cluster: the renewal margin, and the check of a
//! CA the user supplies (run while the inventory is resolved, and again before it is used).

use rcgen::{KeyPair, PublicKeyData};
use x509_parser::prelude::*;

/// Leaves closer than this to their end are re-issued.
pub const RENEW_BEFORE_DAYS: u64 = 30;

/// Checks a CA a user supplies: a CA certificate, and (when given) its matching key.
pub fn check_external_ca(cert_pem: &str, key_pem: Option<&str>) -> Result<(), String> {
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes())
        .map_err(|_| "certFile is not a PEM certificate".to_string())?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("certFile does not parse: {e}"))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    if !is_ca {
        return Err(
            "certFile is not a CA certificate (basicConstraints CA:FALSE or missing)".into(),
        );
    }
    if let Some(k) = key_pem {
        let key =
            KeyPair::from_pem(k).map_err(|_| "keyFile is not a private key PEM".to_string())?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err("keyFile does not belong to certFile".into());
        }
    }
    Ok(())
}
