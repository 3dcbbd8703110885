//! Strict host-key verification against an OpenSSH known_hosts file.
//!
//! Matching follows OpenSSH: comma-separated patterns with `*`/`?` globs and `!` negation,
//! `[host]:port` for non-standard ports, hashed names (`|1|salt|hash`), and `@revoked` markers.

use hmac::{Hmac, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{HashAlg, PublicKey};
use sha1::Sha1;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A recorded key for this host equals the server's key.
    Trusted,
    /// No key is recorded for this host.
    Unknown,
    /// Keys are recorded for this host, none of them the server's; `line` is the first of them.
    Changed { line: usize },
    /// The server's key is marked @revoked.
    Revoked { line: usize },
}

/// The name known_hosts uses for a host and port.
pub fn host_key_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<Verdict> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(check_text(&text, host, port, key))
}

pub fn check_text(text: &str, host: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = host_key_name(host, port);
    let mut first_other: Option<usize> = None;
    let mut trusted = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Lines this parser cannot read (unknown key types, junk) are not ours to judge.
        let Ok(entry) = line.parse::<Entry>() else {
            continue;
        };
        if !matches_host(entry.host_patterns(), &name) {
            continue;
        }
        let same = entry.public_key().key_data() == key.key_data();
        match entry.marker() {
            Some(Marker::Revoked) if same => return Verdict::Revoked { line: i + 1 },
            Some(_) => continue,
            None if same => trusted = true,
            None => {
                first_other.get_or_insert(i + 1);
            }
        }
    }
    match (trusted, first_other) {
        (true, _) => Verdict::Trusted,
        (false, Some(line)) => Verdict::Changed { line },
        (false, None) => Verdict::Unknown,
    }
}

fn matches_host(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for p in list {
                if let Some(neg) = p.strip_prefix('!') {
                    if glob(neg, name) {
                        return false;
                    }
                } else if glob(p, name) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// OpenSSH's pattern language: `*` any run, `?` any one character; case-insensitive.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Records a newly accepted key (trust on first use), creating the file 0600 if needed.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let openssh = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let needs_newline = std::fs::read(path)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let nl = if needs_newline { "\n" } else { "" };
    writeln!(f, "{nl}{} {openssh}", host_key_name(host, port))
}

pub fn fingerprint(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> Result<PublicKey, Box<dyn std::error::Error>> {
        Ok(PublicKey::from_openssh(s)?)
    }

    #[test]
    fn plain_port_and_glob_entries() -> Result<(), Box<dyn std::error::Error>> {
        let text = format!(
            "# comment\n\n10.0.0.1 {KEY_A}\n[10.0.0.2]:2222 {KEY_A}\n*.example.com,!bad.example.com {KEY_A}\n"
        );
        let a = key(KEY_A)?;
        assert_eq!(check_text(&text, "10.0.0.1", 22, &a), Verdict::Trusted);
        assert_eq!(check_text(&text, "10.0.0.2", 2222, &a), Verdict::Trusted);
        assert_eq!(check_text(&text, "10.0.0.2", 22, &a), Verdict::Unknown);
        assert_eq!(
            check_text(&text, "n1.example.com", 22, &a),
            Verdict::Trusted
        );
        assert_eq!(
            check_text(&text, "bad.example.com", 22, &a),
            Verdict::Unknown
        );
        assert_eq!(
            check_text(&text, "10.0.0.1", 22, &key(KEY_B)?),
            Verdict::Changed { line: 3 }
        );
        Ok(())
    }

    #[test]
    fn hashed_names_and_revoked_keys() -> Result<(), Box<dyn std::error::Error>> {
        // |1|salt|hash for "10.0.0.9", made with: ssh-keygen -H
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt)?;
        mac.update(b"10.0.0.9");
        let hash = mac.finalize().into_bytes();
        use base64_helper::encode;
        let text = format!(
            "|1|{}|{} {KEY_A}\n@revoked * {KEY_B}\n",
            encode(&salt),
            encode(&hash)
        );
        assert_eq!(
            check_text(&text, "10.0.0.9", 22, &key(KEY_A)?),
            Verdict::Trusted
        );
        assert_eq!(
            check_text(&text, "10.0.0.8", 22, &key(KEY_A)?),
            Verdict::Unknown
        );
        assert_eq!(
            check_text(&text, "10.0.0.9", 22, &key(KEY_B)?),
            Verdict::Revoked { line: 2 }
        );
        Ok(())
    }

    #[test]
    fn append_creates_a_private_file_that_then_matches() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub/known_hosts");
        append(&path, "10.0.0.5", 2200, &key(KEY_A)?)?;
        assert_eq!(
            check(&path, "10.0.0.5", 2200, &key(KEY_A)?)?,
            Verdict::Trusted
        );
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        Ok(())
    }

    mod base64_helper {
        pub fn encode(data: &[u8]) -> String {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for c in data.chunks(3) {
                let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
                let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
                for i in 0..4 {
                    if i <= c.len() {
                        out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                    } else {
                        out.push('=');
                    }
                }
            }
            out
        }
    }
}
