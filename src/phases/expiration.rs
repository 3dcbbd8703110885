//! `provision certs check-expiration`: every certificate on every control plane, with its expiry,
//! its CA, and whether provision manages it (kubeadm's table).

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
    pub authority: String,
    pub externally_managed: bool,
}

pub async fn report(ctx: &Ctx) -> Result<(), ()> {
    let (rows, unreadable) = rows(ctx).await;
    for e in &unreadable {
        eprintln!("{e}");
    }
    match ctx.out.format {
        Format::Json => println!("{}", serde_json::to_string(&rows).unwrap_or_default()),
        Format::Text => print_table(&rows),
    }
    if unreadable.is_empty() {
        Ok(())
    } else {
        Err(())
    }
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
    for host in ctx.cluster.control_planes() {
        let mut wanted: Vec<(String, String, String)> = Vec::new(); // (name, path, authority)
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
                        authority,
                        externally_managed: false,
                    });
                }
                continue;
            };
            let text = String::from_utf8_lossy(bytes);
            let cert = if path.ends_with(".conf") {
                kubeconfig::parse(&text).map(|c| c.cert_pem)
            } else {
                Ok(text.into_owned())
            };
            let (days, expires) = match cert.and_then(|c| pki::expiry(&c)) {
                Ok((d, e, _)) => (Some(d), e),
                Err(e) => (None, format!("unreadable: {e}")),
            };
            let externally_managed =
                external_key == Some(true) && (authority == "ca" || name == "ca");
            rows.push(Row {
                host: host.name.clone(),
                certificate: name,
                expires,
                residual_days: days,
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
