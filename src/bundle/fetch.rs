//! Downloads over HTTPS: connect and read timeouts (never a whole-request limit, so a slow but
//! moving download finishes), retries with backoff, resume with Range, and a digest check
//! before anything enters the cache.

use crate::catalog::digest::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{what}: {url} was not found ({status}); check the version, or the mirror's layout")]
    NotFound {
        what: String,
        url: String,
        status: u16,
    },
    #[error("{what}: {url} answered {status}")]
    Status {
        what: String,
        url: String,
        status: u16,
    },
    #[error(
        "{what}: the download from {url} has digest {actual}, but {expected} was expected; the partial file was deleted. The file upstream changed, or something between here and it altered it: do not use it"
    )]
    Mismatch {
        what: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {url}: {detail} (after {attempts} attempts)")]
    Transport {
        what: String,
        url: String,
        detail: String,
        attempts: u32,
    },
    #[error("{0}")]
    Local(String),
}

pub struct Fetcher {
    client: reqwest::Client,
    bars: Option<MultiProgress>,
}

impl Fetcher {
    /// A client that trusts the system roots, or only `ca_file` when one is given (a mirror's CA).
    pub fn new(ca_file: Option<&Path>) -> Result<Fetcher, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(30))
            .user_agent(concat!("provision/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: not a PEM CA certificate: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "{}: holds no PEM certificate; give the mirror's CA certificate",
                    path.display()
                ));
            }
            b = b.tls_certs_only(certs);
        }
        let client = b.build().map_err(|e| format!("HTTPS client: {e}"))?;
        let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
        Ok(Fetcher { client, bars })
    }

    /// A small text file, such as a published `.sha256`.
    pub async fn text(&self, what: &str, url: &str) -> Result<String, FetchError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            match self.client.get(url).send().await {
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(t) => return Ok(t),
                    Err(e) => last = error_chain(&e),
                },
                Ok(r) => {
                    status_error(what, url, r.status())?;
                    last = r.status().to_string();
                }
                Err(e) if is_certificate_error(&e) => return Err(untrusted(what, url, &e)),
                Err(e) => last = error_chain(&e),
            }
        }
        Err(FetchError::Transport {
            what: what.into(),
            url: url.into(),
            detail: last,
            attempts: ATTEMPTS,
        })
    }

    /// Downloads `url` into `part` (resuming what is there), checks `expected`, and renames the
    /// verified file to `dest`. On a digest mismatch the partial file is deleted.
    pub async fn download(
        &self,
        what: &str,
        url: &str,
        part: &Path,
        dest: &Path,
        expected: &Digest,
    ) -> Result<u64, FetchError> {
        let local =
            |e: std::io::Error, p: &Path| FetchError::Local(format!("{}: {e}", p.display()));
        if let Some(dir) = part.parent() {
            std::fs::create_dir_all(dir).map_err(|e| local(e, dir))?;
        }
        let started = Instant::now();
        let bar = self.bars.as_ref().map(|m| {
            let pb = m.add(ProgressBar::new(0));
            pb.set_style(
                ProgressStyle::with_template(
                    "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
                )
                // a plain bar rather than no download when the template does not parse
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb.set_message(what.to_string());
            pb
        });
        let mut last = String::new();
        let mut complete = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            match self.attempt(what, url, part, bar.as_ref()).await {
                Ok(()) => {
                    complete = true;
                    break;
                }
                Err(Attempt::Fatal(e)) => {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    return Err(e);
                }
                Err(Attempt::Retry(detail)) => last = detail,
            }
        }
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        if !complete {
            return Err(FetchError::Transport {
                what: what.into(),
                url: url.into(),
                detail: format!("{last}; the partial file is kept and the next fetch resumes it"),
                attempts: ATTEMPTS,
            });
        }
        let actual = Digest::of_file(expected.algo, part).map_err(|e| local(e, part))?;
        if &actual != expected {
            let _ = std::fs::remove_file(part);
            return Err(FetchError::Mismatch {
                what: what.into(),
                url: url.into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| local(e, dir))?;
        }
        std::fs::rename(part, dest).map_err(|e| local(e, dest))?;
        let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        if self.bars.is_none() {
            eprintln!(
                "fetched {what}: {} in {:.1}s",
                human_bytes(size),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(size)
    }

    /// One request: appends to `part` from where it ends.
    async fn attempt(
        &self,
        what: &str,
        url: &str,
        part: &Path,
        bar: Option<&ProgressBar>,
    ) -> Result<(), Attempt> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let mut req = self.client.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req.send().await.map_err(|e| {
            if is_certificate_error(&e) {
                Attempt::Fatal(untrusted(what, url, &e))
            } else {
                Attempt::Retry(error_chain(&e))
            }
        })?;
        let status = resp.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    // the server resumed elsewhere: start over
                    let _ = std::fs::remove_file(part);
                    return Err(Attempt::Retry(
                        "the server resumed at the wrong offset".into(),
                    ));
                }
                true
            }
            StatusCode::OK => false,
            // everything is already here; the digest check decides
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => return Ok(()),
            s => {
                status_error(what, url, s).map_err(Attempt::Fatal)?;
                return Err(Attempt::Retry(format!("HTTP {s}")));
            }
        };
        let total = resp
            .content_length()
            .map(|n| n + if append { have } else { 0 });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(part)
            .map_err(|e| Attempt::Fatal(FetchError::Local(format!("{}: {e}", part.display()))))?;
        let mut written = if append { have } else { 0 };
        if let Some(b) = bar {
            b.set_length(total.unwrap_or(0));
            b.set_position(written);
        }
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    file.write_all(&chunk).map_err(|e| {
                        Attempt::Fatal(FetchError::Local(format!("{}: {e}", part.display())))
                    })?;
                    written += chunk.len() as u64;
                    if let Some(b) = bar {
                        b.set_position(written);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = file.flush();
                    return Err(Attempt::Retry(format!(
                        "the transfer broke off after {written} bytes: {}",
                        error_chain(&e)
                    )));
                }
            }
        }
        file.flush()
            .map_err(|e| Attempt::Fatal(FetchError::Local(format!("{}: {e}", part.display()))))?;
        if let Some(t) = total
            && written < t
        {
            return Err(Attempt::Retry(format!(
                "the transfer ended after {written} of {t} bytes"
            )));
        }
        Ok(())
    }
}

enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

/// Statuses that retrying cannot fix become errors; 5xx and 429 are retried.
fn status_error(what: &str, url: &str, s: StatusCode) -> Result<(), FetchError> {
    if s == StatusCode::NOT_FOUND || s == StatusCode::GONE {
        return Err(FetchError::NotFound {
            what: what.into(),
            url: url.into(),
            status: s.as_u16(),
        });
    }
    if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS && s != StatusCode::REQUEST_TIMEOUT
    {
        return Err(FetchError::Status {
            what: what.into(),
            url: url.into(),
            status: s.as_u16(),
        });
    }
    Ok(())
}

/// A server certificate that does not verify: retrying cannot help.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    error_chain(e).to_lowercase().contains("certificate")
}

fn untrusted(what: &str, url: &str, e: &reqwest::Error) -> FetchError {
    FetchError::Transport {
        what: what.into(),
        url: url.into(),
        detail: format!(
            "{}; for a mirror with its own CA, set spec.bundle.caFile",
            error_chain(e)
        ),
        attempts: 1,
    }
}

/// reqwest's error with its causes (the TLS or connect reason is in the chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The digest of `name` in a published checksums file (`sha256sum` lines: digest, then the
/// file name, `*`-prefixed in binary mode).
pub fn parse_checksums(text: &str, name: &str) -> Option<Digest> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let (digest, file) = (words.next()?, words.next()?);
        (file.trim_start_matches('*') == name)
            .then(|| Digest::parse(digest).ok())
            .flatten()
    })
}

/// The digest in a published `.sha256` file: its first word.
pub fn parse_sha256_file(text: &str) -> Option<Digest> {
    let word = text.split_whitespace().next()?;
    Digest::parse(word).ok()
}
