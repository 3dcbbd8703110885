//! `provision certs check-expiration`: every certificate on every host, with its expiry, its CA,
//! and whether provision manages it (kubeadm's table): the control planes' PKI and kubeconfigs,
//! and on every node the kubelet's client and serving certificates (which the kubelet rotates
//! itself) and kube-proxy's kubeconfig. `--warn-within` makes one close to expiry an exit 1.

use crate::host::read::read_files;
use crate::output::Format;
use crate::paths::PKI_DIR;
use crate::pki::kubeconfig::{self, KubeconfigKind};
use crate::pki::{self, CaKind, Leaf};
use crate::run::Ctx;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Row {
    pub host: String,
    pub certificate: String,
    /// RFC 2822-ish date, or "missing"
    pub expires: String,
    pub residual_days: Option<i64>,
    /// Seconds until expiry (negative: expired); None when missing or unreadable.
    pub residual_seconds: Option<i64>,
    pub authority: String,
    pub externally_managed: bool,
}

/// Prints the table (or JSON); fails when a host could not be read, or with `warn_within`
/// (seconds) when a certificate is missing, unreadable or expires within it (each named).
pub async fn report(ctx: &Ctx, warn_within: Option<i64>) -> Result<(), ()> {
    let (rows, unreadable) = rows(ctx).await;
    for e in &unreadable {
        eprintln!("{e}");
    }
    match ctx.out.format {
        Format::Json => println!("{}", serde_json::to_string(&rows).unwrap_or_default()),
        Format::Text => print_table(&rows),
    }
    let warnings = warn_within.map(|w| warnings(&rows, w)).unwrap_or_default();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if unreadable.is_empty() && warnings.is_empty() {
        Ok(())
    } else {
        Err(())
    }
}

/// The certificates that expire within `seconds`, or cannot be read, one line each with what
/// to do.
pub fn warnings(rows: &[Row], seconds: i64) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            let what = match r.residual_seconds {
                Some(s) if s < 0 => format!("expired on {}", r.expires),
                Some(s) if s <= seconds => format!("expires {} ({})", r.expires, residual(r.residual_days)),
                Some(_) => return None,
                None => r.expires.clone(),
            };
            let fix = if r.certificate == "kubelet-client" && r.residual_seconds.is_some_and(|s| s < 0) {
                "the kubelet cannot renew an expired one itself: `provision certs renew all` (or `provision join --hosts HOST`) has it bootstrap again".to_string()
            } else if r.certificate.starts_with("kubelet-") {
                "the kubelet renews it itself while it runs and its requests are approved (`provision join --hosts HOST` repairs a node)".to_string()
            } else {
                format!("`provision certs renew {}`", r.certificate)
            };
            Some(format!("{}: {} {what}: {fix}", r.host, r.certificate))
        })
        .collect()
}

/// `400d`, `72h`, `30m` or `90s` in seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.len().saturating_sub(1));
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if scale > 0 && n >= 0 => Ok(n * scale),
        _ => Err(format!(
            "{text:?} is not a duration: write a number and a unit, e.g. 30d, 72h, 90m"
        )),
    }
}

/// The kubelet's own files, which it rotates: (row name, path).
const KUBELET_CERTS: [(&str, &str); 2] = [
    ("kubelet-client", crate::phases::kubelet::CLIENT_CERT),
    (
        "kubelet-serving",
        "/var/lib/kubelet/pki/kubelet-server-current.pem",
    ),
];

/// The first certificate of a PEM text (the kubelet's files hold the key too).
pub(crate) fn first_certificate(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(pem[start..end].to_string())
}

/// A kubeconfig whose client certificate is a file (the kubelet's after its TLS bootstrap):
/// that file has its own row.
fn names_a_certificate_file(text: &str) -> bool {
    serde_yaml::from_str::<kube::config::Kubeconfig>(text).is_ok_and(|k| {
        k.auth_infos
            .first()
            .and_then(|u| u.auth_info.as_ref())
            .is_some_and(|a| a.client_certificate.is_some() && a.client_certificate_data.is_none())
    })
}

/// Every certificate of every control plane, and the hosts that could not be read (named).
pub async fn rows(ctx: &Ctx) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut unreadable = Vec::new();
    let external_key = ctx
        .cluster
        .pki
        .external_ca
        .as_ref()
        .map(|e| e.key_pem.is_none());
    for host in &ctx.cluster.hosts {
        let mut wanted: Vec<(String, String, String)> = Vec::new(); // (name, path, authority)
        if host.control_plane {
            for l in Leaf::ALL {
                wanted.push((
                    l.name().into(),
                    format!("{PKI_DIR}/{}.crt", l.base()),
                    l.ca().name().into(),
                ));
            }
            for k in KubeconfigKind::ALL {
                wanted.push((format!("{}.conf", k.name()), k.path(), "ca".into()));
            }
            for c in CaKind::ALL {
                wanted.push((
                    c.name().into(),
                    format!("{PKI_DIR}/{}.crt", c.base()),
                    String::new(),
                ));
            }
        } else {
            let k = KubeconfigKind::KubeProxy;
            wanted.push((format!("{}.conf", k.name()), k.path(), "ca".into()));
        }
        for (name, path) in KUBELET_CERTS {
            wanted.push((name.into(), path.into(), "ca".into()));
        }
        let paths: Vec<String> = wanted.iter().map(|(_, p, _)| p.clone()).collect();
        let files = match ctx.session(host).await {
            Ok(s) => read_files(&s, &paths).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                unreadable.push(format!("{}: {e}", host.name));
                continue;
            }
        };
        for (name, path, authority) in wanted {
            let Some(bytes) = files.get(&path) else {
                if name != "super-admin.conf" {
                    rows.push(Row {
                        host: host.name.clone(),
                        certificate: name,
                        expires: "missing".into(),
                        residual_days: None,
                        residual_seconds: None,
                        authority,
                        externally_managed: false,
                    });
                }
                continue;
            };
            let text = String::from_utf8_lossy(bytes);
            let cert = if path.ends_with(".conf") {
                if names_a_certificate_file(&text) {
                    continue;
                }
                kubeconfig::parse(&text).map(|c| c.cert_pem)
            } else {
                first_certificate(&text).ok_or_else(|| "no certificate in it".to_string())
            };
            let (seconds, expires) = match cert.and_then(|c| pki::expiry(&c)) {
                Ok((s, e, _)) => (Some(s), e),
                Err(e) => (None, format!("unreadable: {e}")),
            };
            let days = seconds.map(|s| if s < 0 { -1 } else { s / 86_400 });
            let externally_managed =
                external_key == Some(true) && (authority == "ca" || name == "ca");
            rows.push(Row {
                host: host.name.clone(),
                certificate: name,
                expires,
                residual_days: days,
                residual_seconds: seconds,
                authority,
                externally_managed,
            });
        }
    }
    (rows, unreadable)
}

pub fn residual(days: Option<i64>) -> String {
    match days {
        None => "-".into(),
        Some(d) if d < 0 => "expired".into(),
        Some(d) if d >= 365 => format!("{}y", d / 365),
        Some(d) => format!("{d}d"),
    }
}

fn print_table(rows: &[Row]) {
    let mut host = "";
    for r in rows {
        if r.host != host {
            host = &r.host;
            println!("\n{host}:");
            println!(
                "  {:<26} {:<28} {:<14} {:<24} EXTERNALLY MANAGED",
                "CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY"
            );
        }
        println!(
            "  {:<26} {:<28} {:<14} {:<24} {}",
            r.certificate,
            r.expires,
            residual(r.residual_days),
            r.authority,
            if r.externally_managed { "yes" } else { "no" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(certificate: &str, seconds: Option<i64>, expires: &str) -> Row {
        Row {
            host: "w1".into(),
            certificate: certificate.into(),
            expires: expires.into(),
            residual_days: seconds.map(|s| s / 86_400),
            residual_seconds: seconds,
            authority: "ca".into(),
            externally_managed: false,
        }
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("400d"), Ok(400 * 86_400));
        assert_eq!(parse_duration("72h"), Ok(72 * 3_600));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        assert_eq!(parse_duration("15s"), Ok(15));
        for bad in ["400", "d", "-1d", "1w", ""] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("e.g. 30d, 72h, 90m"), "{err}");
        }
    }

    #[test]
    fn warnings_name_each_certificate_within_the_window_and_what_to_do() {
        let rows = [
            row("apiserver", Some(364 * 86_400), "Dec  4 2027"),
            row("kubelet-serving", Some(3_600), "Dec  4 2026"),
            row("kubelet-client", None, "missing"),
            row("ca", Some(3_650 * 86_400), "Dec  1 2036"),
        ];
        let w = warnings(&rows, 400 * 86_400);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with(
                "w1: apiserver expires Dec  4 2027 (364d): `provision certs renew apiserver`"
            ),
            "{}",
            w[0]
        );
        assert!(w[1].contains("kubelet-serving expires"), "{}", w[1]);
        assert!(w[1].contains("the kubelet renews it itself"), "{}", w[1]);
        assert!(w[2].starts_with("w1: kubelet-client missing"), "{}", w[2]);
        assert!(warnings(&rows[..1], 30 * 86_400).is_empty());
        // past expiry: said so, and the kubelet's own cannot be renewed by the kubelet
        let past = [
            row("apiserver", Some(-60), "Dec  4 2026"),
            row("kubelet-client", Some(-60), "Dec  4 2026"),
        ];
        let w = warnings(&past, 86_400);
        assert!(
            w[0].starts_with(
                "w1: apiserver expired on Dec  4 2026: `provision certs renew apiserver`"
            ),
            "{}",
            w[0]
        );
        assert!(
            w[1].contains("kubelet-client expired on")
                && w[1].contains("`provision certs renew all`"),
            "{}",
            w[1]
        );
    }

    #[test]
    fn the_kubelets_files_give_their_certificate_and_its_kubeconfig_no_row() -> Result<(), String> {
        let ca = pki::Ca::generate(CaKind::Kubernetes, crate::inventory::KeyType::EcdsaP256, 10)
            .map_err(|e| e.to_string())?;
        // the kubelet writes the certificate and its key into one file
        let pem = format!(
            "{}-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            ca.cert_pem
        );
        let cert = first_certificate(&pem).ok_or("no certificate found")?;
        assert_eq!(cert.trim(), ca.cert_pem.trim());
        let (seconds, _, _) = pki::expiry(&cert)?;
        assert!(seconds > 9 * 86_400 && seconds <= 10 * 86_400, "{seconds}");
        let by_file = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://x:6443'}}]\nusers: [{name: u, user: {client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem, client-key: /var/lib/kubelet/pki/kubelet-client-current.pem}}]\ncontexts: []\n";
        assert!(names_a_certificate_file(by_file));
        let embedded = by_file.replace("client-certificate: ", "client-certificate-data: ");
        assert!(!names_a_certificate_file(&embedded));
        Ok(())
    }
}
