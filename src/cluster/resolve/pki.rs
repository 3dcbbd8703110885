//! The PKI settings: key type, validity, an external CA (checked here, with its key when given).

use super::*;

impl Resolver<'_> {
    pub(super) fn pki(&mut self) -> Option<Pki> {
        let spec = self.loaded.inventory.spec.pki.clone();
        let days = |s: &mut Self, v: Option<u32>, default: u32, field: &str, min: u32, max: u32| {
            match v {
                None => Some(default),
                Some(d) if d >= min && d <= max => Some(d),
                Some(d) => {
                    s.error(
                    &format!("spec.pki.{field}"),
                    format!("{d} days is out of range"),
                    &format!(
                        "use {min} to {max} days (certificates within {} days of their end are renewed on every run)",
                        crate::x509::RENEW_BEFORE_DAYS
                    ),
                );
                    None
                }
            }
        };
        // leaves closer than RENEW_BEFORE_DAYS to their end are re-issued: a shorter lifetime
        // would re-issue every certificate on every run
        let min_leaf = crate::x509::RENEW_BEFORE_DAYS as u32 + 1;
        let cert_days = days(
            self,
            spec.cert_validity_days,
            365,
            "certValidityDays",
            min_leaf,
            3650,
        );
        let ca_days = days(
            self,
            spec.ca_validity_days,
            3650,
            "caValidityDays",
            min_leaf,
            36500,
        );
        if let (Some(c), Some(ca)) = (cert_days, ca_days)
            && c > ca
        {
            self.error(
                "spec.pki.certValidityDays",
                format!("leaves ({c} days) would outlive their CA ({ca} days)"),
                "make certValidityDays shorter than caValidityDays",
            );
        }
        let external_ca = match &spec.external_ca {
            None => None,
            Some(e) => {
                let cert_file = self.loaded.resolve_path(&e.cert_file);
                let key_file = e.key_file.as_deref().map(|k| self.loaded.resolve_path(k));
                let read = |s: &mut Self, path: &PathBuf, field: &str| match std::fs::read_to_string(
                    path,
                ) {
                    Ok(t) => Some(t),
                    Err(err) => {
                        s.error(
                            &format!("spec.pki.externalCA.{field}"),
                            format!("cannot read {}: {err}", path.display()),
                            "give the path of a PEM file (relative paths start at the inventory's directory)",
                        );
                        None
                    }
                };
                let cert_pem = read(self, &cert_file, "certFile");
                let key_pem = match &key_file {
                    Some(k) => read(self, k, "keyFile").map(Some),
                    None => Some(None),
                };
                match (cert_pem, key_pem) {
                    (Some(cert_pem), Some(key_pem)) => {
                        if let Err(e) =
                            crate::x509::check_external_ca(&cert_pem, key_pem.as_deref())
                        {
                            self.error(
                                "spec.pki.externalCA",
                                e,
                                "certFile must be a CA certificate (PEM) and keyFile its private key",
                            );
                        }
                        Some(ExternalCa {
                            cert_file,
                            key_file,
                            cert_pem,
                            key_pem,
                        })
                    }
                    _ => None,
                }
            }
        };
        Some(Pki {
            key_type: spec.key_type,
            cert_validity_days: cert_days?,
            ca_validity_days: ca_days?,
            external_ca,
        })
    }
}
