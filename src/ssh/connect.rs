//! Reaching a host: TCP (directly or through a bastion's `direct-tcpip` channel), the SSH
//! handshake with the host key matched against known_hosts, under timeouts.

use super::*;

/// The host-key check russh calls during the handshake; the verdict is kept for the error.
pub(super) struct KeyChecker {
    pub(super) known_hosts: PathBuf,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) policy: HostKeyPolicy,
    pub(super) outcome: Arc<Mutex<Option<Result<(), SshErrorSeed>>>>,
}

/// The parts of a host-key error known inside the handler.
#[derive(Debug, Clone)]
pub(super) enum SshErrorSeed {
    Unknown(String),
    Changed(String, usize),
    Revoked(String, usize),
    Io(String),
    Certificate,
}

impl client::Handler for KeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key),
            russh::keys::PublicKeyOrCertificate::Certificate(_) => Err(SshErrorSeed::Certificate),
        };
        let ok = verdict.is_ok();
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        Ok(ok)
    }
}

impl KeyChecker {
    fn verify(&self, key: &PublicKey) -> Result<(), SshErrorSeed> {
        let fp = known_hosts::fingerprint(key);
        match known_hosts::check(&self.known_hosts, &self.host, self.port, key) {
            Err(e) => Err(SshErrorSeed::Io(e.to_string())),
            Ok(known_hosts::Verdict::Trusted) => Ok(()),
            Ok(known_hosts::Verdict::Changed { line }) => Err(SshErrorSeed::Changed(fp, line)),
            Ok(known_hosts::Verdict::Revoked { line }) => Err(SshErrorSeed::Revoked(fp, line)),
            Ok(known_hosts::Verdict::Unknown) => match self.policy {
                HostKeyPolicy::Strict => Err(SshErrorSeed::Unknown(fp)),
                HostKeyPolicy::AcceptNew => {
                    known_hosts::append(&self.known_hosts, &self.host, self.port, key)
                        .map_err(|e| SshErrorSeed::Io(e.to_string()))?;
                    Ok(())
                }
            },
        }
    }
}

pub(super) fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        // AES-GCM first: with AES-NI on both ends it costs a fraction of ChaCha20's CPU per
        // byte, which decides how fast artifacts reach several hosts at once
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            ..Default::default()
        },
        ..Default::default()
    })
}

pub(super) struct Hop<'a> {
    pub(super) label: String,
    pub(super) address: &'a str,
    pub(super) port: u16,
    pub(super) user: &'a str,
    pub(super) identity: Option<&'a Path>,
}

pub(super) fn bastion_hop<'a>(name: &str, b: &'a Bastion) -> Hop<'a> {
    Hop {
        label: format!("{name} (bastion {})", b.address),
        address: &b.address,
        port: b.port,
        user: &b.user,
        identity: b.identity_file.as_deref(),
    }
}

pub(super) async fn tcp(hop: &Hop<'_>, limit: Duration) -> Result<tokio::net::TcpStream, SshError> {
    let addr = format!("{}:{}", hop.address, hop.port);
    let stream = timeout(
        limit,
        tokio::net::TcpStream::connect((hop.address, hop.port)),
    )
    .await
    .map_err(|_| SshError::Timeout {
        host: hop.label.clone(),
        what: format!("connecting to {addr}"),
        seconds: limit.as_secs(),
    })?
    .map_err(|e| SshError::Connect {
        host: hop.label.clone(),
        addr: addr.clone(),
        detail: e.to_string(),
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

pub(super) async fn handshake<S>(
    hop: &Hop<'_>,
    stream: S,
    known_hosts_file: &Path,
    policy: HostKeyPolicy,
    limit: Duration,
) -> Result<Handle<KeyChecker>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = format!("{}:{}", hop.address, hop.port);
    let outcome = Arc::new(Mutex::new(None));
    let checker = KeyChecker {
        known_hosts: known_hosts_file.to_path_buf(),
        host: hop.address.to_string(),
        port: hop.port,
        policy,
        outcome: outcome.clone(),
    };
    let result = timeout(limit, client::connect_stream(config(), stream, checker))
        .await
        .map_err(|_| SshError::Timeout {
            host: hop.label.clone(),
            what: format!("the SSH handshake with {addr}"),
            seconds: limit.as_secs(),
        })?;
    let seed = outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut handle = match (result, seed) {
        (_, Some(Err(seed))) => return Err(host_key_error(hop, &addr, known_hosts_file, seed)),
        (Ok(h), _) => h,
        (Err(e), _) => {
            return Err(SshError::Connect {
                host: hop.label.clone(),
                addr,
                detail: e.to_string(),
            });
        }
    };
    authenticate(hop, &mut handle).await?;
    Ok(handle)
}

pub(super) fn host_key_error(
    hop: &Hop<'_>,
    addr: &str,
    file: &Path,
    seed: SshErrorSeed,
) -> SshError {
    let problem = |fingerprint: String, line: usize| {
        Box::new(HostKeyProblem {
            host: hop.label.clone(),
            addr: addr.to_string(),
            address: hop.address.to_string(),
            port: hop.port,
            fingerprint,
            file: file.to_path_buf(),
            line,
        })
    };
    match seed {
        SshErrorSeed::Unknown(fp) => SshError::UnknownHostKey(problem(fp, 0)),
        SshErrorSeed::Changed(fp, line) => SshError::ChangedHostKey(problem(fp, line)),
        SshErrorSeed::Revoked(fp, line) => SshError::RevokedHostKey(problem(fp, line)),
        SshErrorSeed::Io(detail) => SshError::KnownHosts {
            host: hop.label.clone(),
            file: file.to_path_buf(),
            detail,
        },
        SshErrorSeed::Certificate => SshError::Connect {
            host: hop.label.clone(),
            addr: addr.to_string(),
            detail:
                "the server offered a host certificate; record its plain host key in known_hosts"
                    .into(),
        },
    }
}
