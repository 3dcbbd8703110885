//! The cluster PKI as kubeadm lays it out in /etc/kubernetes/pki: three CAs, the service-account
//! key pair, and seven leaves with kubeadm's names, subjects, usages and SANs, so existing tools
//! (`kubeadm certs check-expiration`, kube-bench) understand it.
//!
//! Certificates are made with rcgen and checked with x509-parser. A leaf is kept when it is
//! compliant (kubeadm's rule) and re-issued only when missing, invalid, signed by another CA,
//! expiring within 30 days, or when its subject or SANs no longer match the inventory.

pub mod kubeconfig;
mod subject;
pub mod token;

use crate::cluster::{Cluster, Host};
use crate::inventory::KeyType;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, RsaKeySize, SanType, SerialNumber,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::*;

pub use crate::x509::RENEW_BEFORE_DAYS;
/// Backdating absorbs clock skew between the operator and the hosts.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaKind {
    Kubernetes,
    FrontProxy,
    Etcd,
}

impl CaKind {
    pub const ALL: [CaKind; 3] = [CaKind::Kubernetes, CaKind::FrontProxy, CaKind::Etcd];

    /// Phase name, as kubeadm's `certs/<name>`.
    pub fn name(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd-ca",
        }
    }

    /// Path below /etc/kubernetes/pki without extension.
    pub fn base(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd/ca",
        }
    }

    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "kubernetes",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd-ca",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leaf {
    Apiserver,
    ApiserverKubeletClient,
    FrontProxyClient,
    EtcdServer,
    EtcdPeer,
    EtcdHealthcheckClient,
    ApiserverEtcdClient,
}

impl Leaf {
    pub const ALL: [Leaf; 7] = [
        Leaf::Apiserver,
        Leaf::ApiserverKubeletClient,
        Leaf::FrontProxyClient,
        Leaf::EtcdServer,
        Leaf::EtcdPeer,
        Leaf::EtcdHealthcheckClient,
        Leaf::ApiserverEtcdClient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Leaf::Apiserver => "apiserver",
            Leaf::ApiserverKubeletClient => "apiserver-kubelet-client",
            Leaf::FrontProxyClient => "front-proxy-client",
            Leaf::EtcdServer => "etcd-server",
            Leaf::EtcdPeer => "etcd-peer",
            Leaf::EtcdHealthcheckClient => "etcd-healthcheck-client",
            Leaf::ApiserverEtcdClient => "apiserver-etcd-client",
        }
    }

    pub fn base(self) -> &'static str {
        match self {
            Leaf::Apiserver => "apiserver",
            Leaf::ApiserverKubeletClient => "apiserver-kubelet-client",
            Leaf::FrontProxyClient => "front-proxy-client",
            Leaf::EtcdServer => "etcd/server",
            Leaf::EtcdPeer => "etcd/peer",
            Leaf::EtcdHealthcheckClient => "etcd/healthcheck-client",
            Leaf::ApiserverEtcdClient => "apiserver-etcd-client",
        }
    }

    pub fn ca(self) -> CaKind {
        match self {
            Leaf::Apiserver | Leaf::ApiserverKubeletClient => CaKind::Kubernetes,
            Leaf::FrontProxyClient => CaKind::FrontProxy,
            Leaf::EtcdServer
            | Leaf::EtcdPeer
            | Leaf::EtcdHealthcheckClient
            | Leaf::ApiserverEtcdClient => CaKind::Etcd,
        }
    }

    /// What kubeadm puts in this certificate for this control-plane host.
    pub fn spec(self, cluster: &Cluster, host: &Host) -> CertSpec {
        let client = |cn: &str, org: Option<&str>| CertSpec {
            common_name: cn.into(),
            organizations: org.map(str::to_string).into_iter().collect(),
            server: false,
            client: true,
            dns: BTreeSet::new(),
            ips: BTreeSet::new(),
        };
        match self {
            Leaf::Apiserver => {
                let mut s = CertSpec {
                    common_name: "kube-apiserver".into(),
                    organizations: Vec::new(),
                    server: true,
                    client: false,
                    dns: BTreeSet::new(),
                    ips: BTreeSet::new(),
                };
                s.add_name(&host.name);
                for n in [
                    "kubernetes".to_string(),
                    "kubernetes.default".into(),
                    "kubernetes.default.svc".into(),
                    format!("kubernetes.default.svc.{}", cluster.dns_domain),
                ] {
                    s.add_name(&n);
                }
                s.ips.insert(cluster.api_service_ip);
                s.add_name(&host.address);
                s.add_name(&cluster.endpoint.host);
                // the nodes' local load balancer passes TLS through from loopback
                if cluster.endpoint.vip.is_some() {
                    s.add_name("127.0.0.1");
                }
                for san in &cluster.api_cert_sans {
                    s.add_name(san);
                }
                s
            }
            Leaf::ApiserverKubeletClient => client(
                "kube-apiserver-kubelet-client",
                Some("kubeadm:cluster-admins"),
            ),
            Leaf::FrontProxyClient => client("front-proxy-client", None),
            Leaf::EtcdServer | Leaf::EtcdPeer => {
                let mut s = CertSpec {
                    common_name: host.name.clone(),
                    organizations: Vec::new(),
                    server: true,
                    client: true,
                    dns: BTreeSet::new(),
                    ips: BTreeSet::new(),
                };
                for n in [
                    host.name.as_str(),
                    "localhost",
                    host.address.as_str(),
                    "127.0.0.1",
                    "::1",
                ] {
                    s.add_name(n);
                }
                s
            }
            Leaf::EtcdHealthcheckClient => client("kube-etcd-healthcheck-client", None),
            Leaf::ApiserverEtcdClient => client("kube-apiserver-etcd-client", None),
        }
    }
}

/// Subject, usages and SANs of a certificate to issue or check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    /// Kubernetes' groups of a client: one O each.
    pub organizations: Vec<String>,
    pub server: bool,
    pub client: bool,
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl CertSpec {
    pub fn client(common_name: &str, organization: Option<&str>) -> CertSpec {
        CertSpec {
            common_name: common_name.into(),
            organizations: organization.map(str::to_string).into_iter().collect(),
            server: false,
            client: true,
            dns: BTreeSet::new(),
            ips: BTreeSet::new(),
        }
    }

    /// An IP address goes to the IP SANs, anything else to the DNS SANs.
    fn add_name(&mut self, name: &str) {
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                self.ips.insert(ip);
            }
            Err(_) => {
                self.dns.insert(name.to_string());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a {0:?} key: {1}")]
    KeyGeneration(KeyType, String),
    #[error("cannot sign {what}: {detail}")]
    Sign { what: String, detail: String },
    #[error("{what} is not a usable PEM: {detail}")]
    Parse { what: String, detail: String },
}

pub fn new_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    let size = match key_type {
        KeyType::EcdsaP256 => {
            return KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| PkiError::KeyGeneration(key_type, e.to_string()));
        }
        KeyType::Rsa2048 => RsaKeySize::_2048,
        KeyType::Rsa3072 => RsaKeySize::_3072,
        KeyType::Rsa4096 => RsaKeySize::_4096,
    };
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
        .map_err(|e| PkiError::KeyGeneration(key_type, e.to_string()))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and never shorter than 16 bytes
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
}

/// A CA: its certificate, and its key when this side holds it (in memory only).
#[derive(Clone)]
pub struct Ca {
    pub kind: CaKind,
    pub cert_pem: String,
    pub key_pem: Option<String>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print key material, even in debug output
        f.debug_struct("Ca")
            .field("kind", &self.kind)
            .field("has_key", &self.key_pem.is_some())
            .finish()
    }
}

impl Ca {
    pub fn generate(kind: CaKind, key_type: KeyType, days: u32) -> Result<Ca, PkiError> {
        let key = new_key(key_type)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, kind.common_name());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, days);
        let cert = params.self_signed(&key).map_err(|e| PkiError::Sign {
            what: kind.common_name().into(),
            detail: e.to_string(),
        })?;
        Ok(Ca {
            kind,
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
        })
    }

    /// Issues a certificate and a new key for `spec`; returns (cert PEM, key PEM).
    pub fn issue(
        &self,
        spec: &CertSpec,
        key_type: KeyType,
        days: u32,
    ) -> Result<(String, String), PkiError> {
        let key = new_key(key_type)?;
        let cert = self.sign(spec, &key, days)?;
        Ok((cert, key.serialize_pem()))
    }

    fn sign(&self, spec: &CertSpec, key: &KeyPair, days: u32) -> Result<String, PkiError> {
        let sign_err = |detail: String| PkiError::Sign {
            what: spec.common_name.clone(),
            detail,
        };
        let key_pem = self.key_pem.as_deref().ok_or_else(|| {
            sign_err(format!(
                "the {} CA's key is not available (external CA)",
                self.kind.common_name()
            ))
        })?;
        let ca_key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Parse {
            what: format!("{} CA key", self.kind.common_name()),
            detail: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(|e| PkiError::Parse {
                what: format!("{} CA certificate", self.kind.common_name()),
                detail: e.to_string(),
            })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        if let Some(o) = spec.organizations.first() {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        for d in &spec.dns {
            let name = d
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| sign_err(e.to_string()))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, days);
        let cert = params
            .signed_by(key, &issuer)
            .map_err(|e| sign_err(e.to_string()))?;
        if spec.organizations.len() < 2 {
            return Ok(cert.pem());
        }
        let ca_key = KeyPair::from_pem(key_pem).map_err(|e| sign_err(e.to_string()))?;
        let der = subject::with_organizations(
            cert.der(),
            &spec.common_name,
            &spec.organizations,
            &ca_key,
        )
        .map_err(sign_err)?;
        Ok(pem_of("CERTIFICATE", &der))
    }

    /// Why an existing certificate (and key) must be replaced, or Ok when it is compliant.
    pub fn check(
        &self,
        spec: &CertSpec,
        cert_pem: &str,
        key_pem: Option<&str>,
    ) -> Result<(), String> {
        let (_, ca_pem) =
            parse_x509_pem(self.cert_pem.as_bytes()).map_err(|e| format!("CA: {e}"))?;
        let ca = ca_pem.parse_x509().map_err(|e| format!("CA: {e}"))?;
        let (_, pem) =
            parse_x509_pem(cert_pem.as_bytes()).map_err(|_| "not a PEM certificate".to_string())?;
        let cert = pem
            .parse_x509()
            .map_err(|_| "not a valid X.509 certificate".to_string())?;
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            return Err(format!(
                "not signed by the current {} CA",
                self.kind.common_name()
            ));
        }
        let left = cert.validity().time_to_expiration();
        if left.is_none_or(|d| d.whole_days() < RENEW_BEFORE_DAYS as i64) {
            return Err(format!(
                "expires within {RENEW_BEFORE_DAYS} days ({})",
                cert.validity().not_after
            ));
        }
        let cn: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        if cn != [spec.common_name.as_str()] {
            return Err(format!("its CN is {cn:?}, not {:?}", spec.common_name));
        }
        let orgs: Vec<&str> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        if orgs != spec.organizations {
            return Err(format!("its O is {orgs:?}, not {:?}", spec.organizations));
        }
        let eku = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| e.value.clone());
        let (server, client) = eku
            .map(|e| (e.server_auth, e.client_auth))
            .unwrap_or((false, false));
        if (server, client) != (spec.server, spec.client) {
            return Err("its extended key usages differ".into());
        }
        let (dns, ips) = sans(&cert);
        if dns != spec.dns || ips != spec.ips {
            let want: Vec<String> = spec
                .dns
                .iter()
                .cloned()
                .chain(spec.ips.iter().map(|i| i.to_string()))
                .collect();
            let have: Vec<String> = dns
                .iter()
                .cloned()
                .chain(ips.iter().map(|i| i.to_string()))
                .collect();
            return Err(format!(
                "its SANs are [{}], wanted [{}]",
                have.join(", "),
                want.join(", ")
            ));
        }
        if let Some(key_pem) = key_pem {
            let key =
                KeyPair::from_pem(key_pem).map_err(|_| "its key does not parse".to_string())?;
            if key.subject_public_key_info() != cert.public_key().raw {
                return Err("its key does not match the certificate".into());
            }
        }
        Ok(())
    }
}

fn sans(cert: &X509Certificate<'_>) -> (BTreeSet<String>, BTreeSet<IpAddr>) {
    let mut dns = BTreeSet::new();
    let mut ips = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    dns.insert(d.to_string());
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        ips.insert(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()));
                    }
                    16 => {
                        ips.insert(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// The service-account signing key pair: (private key PEM, public key PEM).
pub fn service_account_key(key_type: KeyType) -> Result<(String, String), PkiError> {
    let key = new_key(key_type)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// The public key PEM of a private key PEM (to check sa.pub against sa.key).
pub fn public_key_of(key_pem: &str) -> Result<String, PkiError> {
    KeyPair::from_pem(key_pem)
        .map(|k| k.public_key_pem())
        .map_err(|e| PkiError::Parse {
            what: "private key".into(),
            detail: e.to_string(),
        })
}

/// Seconds until a certificate expires (-1 once expired), its not-after date and its issuer CN:
/// for check-expiration.
pub fn expiry(cert_pem: &str) -> Result<(i64, String, String), String> {
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    let left = cert
        .validity()
        .time_to_expiration()
        .map(|d| d.whole_seconds())
        .unwrap_or(-1);
    let issuer = cert
        .issuer()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .next()
        .unwrap_or("")
        .to_string();
    Ok((left, cert.validity().not_after.to_string(), issuer))
}

/// PEM text of one DER block, 64 columns as OpenSSL writes it.
fn pem_of(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests;
