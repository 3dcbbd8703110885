//! Subjects with several organizations. Kubernetes reads a client's groups from every O of its
//! certificate's subject, but rcgen writes one attribute per type; so a certificate for several
//! groups is issued with the first, then its subject is replaced (DER) and it is signed again
//! with the same CA key and algorithm.

use rcgen::{KeyPair, SigningKey};
use x509_parser::prelude::{FromDer, X509Certificate};

const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
const OID_ORGANIZATION: [u8; 3] = [0x55, 0x04, 0x0a];

/// `cert_der` with the subject CN=`common_name`, O=each of `organizations` (in order), signed
/// again by `ca_key`.
pub fn with_organizations(
    cert_der: &[u8],
    common_name: &str,
    organizations: &[String],
    ca_key: &KeyPair,
) -> Result<Vec<u8>, String> {
    let (rest, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| format!("not a certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let tbs = cert.tbs_certificate.as_ref();
    let subject = cert.tbs_certificate.subject.as_raw();
    let (tbs_at, subject_at) = (offset(cert_der, tbs)?, offset(tbs, subject)?);
    let tbs_body = body(tbs)?;
    let body_at = tbs.len() - tbs_body.len();
    let mut new_body = tbs_body[..subject_at - body_at].to_vec();
    new_body.extend(name(common_name, organizations));
    new_body.extend(&tbs[subject_at + subject.len()..]);
    let new_tbs = tlv(0x30, &new_body);
    // the AlgorithmIdentifier that follows the TBS in the certificate: kept as it is
    let after_tbs = &cert_der[tbs_at + tbs.len()..];
    let algorithm = &after_tbs[..element_len(after_tbs)?];
    let signature = ca_key
        .sign(&new_tbs)
        .map_err(|e| format!("cannot sign: {e}"))?;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend(signature);
    let mut certificate = new_tbs;
    certificate.extend(algorithm);
    certificate.extend(tlv(0x03, &bits));
    Ok(tlv(0x30, &certificate))
}

/// The DER Name: one RDN per attribute, CN first.
fn name(common_name: &str, organizations: &[String]) -> Vec<u8> {
    let attribute = |oid: &[u8], value: &str| {
        let mut seq = tlv(0x06, oid);
        seq.extend(tlv(0x0c, value.as_bytes())); // UTF8String
        tlv(0x31, &tlv(0x30, &seq))
    };
    let mut rdns = attribute(&OID_COMMON_NAME, common_name);
    for o in organizations {
        rdns.extend(attribute(&OID_ORGANIZATION, o));
    }
    tlv(0x30, &rdns)
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend(value);
    out
}

/// (header length, value length) of the DER element at the start of `der`.
fn header(der: &[u8]) -> Result<(usize, usize), String> {
    let short = *der.get(1).ok_or("truncated DER")?;
    if short < 0x80 {
        return Ok((2, short as usize));
    }
    let n = (short & 0x7f) as usize;
    let bytes = der.get(2..2 + n).ok_or("truncated DER length")?;
    let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
    Ok((2 + n, len))
}

fn element_len(der: &[u8]) -> Result<usize, String> {
    let (h, n) = header(der)?;
    if h + n > der.len() {
        return Err("truncated DER element".into());
    }
    Ok(h + n)
}

fn body(der: &[u8]) -> Result<&[u8], String> {
    let (h, n) = header(der)?;
    der.get(h..h + n)
        .ok_or_else(|| "truncated DER element".into())
}

/// Where `part` (a slice of `whole`) starts in it.
fn offset(whole: &[u8], part: &[u8]) -> Result<usize, String> {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    if p < w || p + part.len() > w + whole.len() {
        return Err("certificate parts out of place".into());
    }
    Ok(p - w)
}
