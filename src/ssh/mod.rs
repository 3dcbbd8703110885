//! SSH transport (russh): one connection per host, reused by every phase.
//!
//! Commands run through `sh -c` (and `sudo -n` for non-root users). Secrets never appear on a
//! command line: file contents travel on stdin.

pub mod known_hosts;

use crate::cluster::{Bastion, SshTarget};
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, load_secret_key};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::time::timeout;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse hosts whose key is not recorded (the default).
    Strict,
    /// Record keys of unknown hosts; still refuse changed keys.
    AcceptNew,
}

#[derive(Debug, Error)]
pub enum SshError {
    #[error("cannot connect to {host} ({addr}): {detail}")]
    Connect {
        host: String,
        addr: String,
        detail: String,
    },
    #[error("{host}: {what} timed out after {seconds}s")]
    Timeout {
        host: String,
        what: String,
        seconds: u64,
    },
    #[error("{}", unknown_key_message(.0))]
    UnknownHostKey(Box<HostKeyProblem>),
    #[error("{}", changed_key_message(.0))]
    ChangedHostKey(Box<HostKeyProblem>),
    #[error("{} ({}): the host key {} is marked @revoked at line {} of {}", .0.host, .0.addr, .0.fingerprint, .0.line, .0.file.display())]
    RevokedHostKey(Box<HostKeyProblem>),
    #[error("{host}: cannot read {file}: {detail}")]
    KnownHosts {
        host: String,
        file: PathBuf,
        detail: String,
    },
    #[error(
        "{host}: authentication as {user} failed (tried: {tried}).\n  Give the key in spec.ssh.identityFile, or add it to ssh-agent"
    )]
    Auth {
        host: String,
        user: String,
        tried: String,
    },
    #[error("{host}: cannot use the key {file}: {detail}")]
    Key {
        host: String,
        file: PathBuf,
        detail: String,
    },
    #[error(
        "{host}: sudo asks {user} for a password.\n  Allow passwordless sudo for {user} (e.g. '{user} ALL=(ALL) NOPASSWD:ALL' in /etc/sudoers.d/), or log in as root"
    )]
    SudoPassword { host: String, user: String },
    #[error("{host}: `{command}` exited with status {status}: {stderr}")]
    Command {
        host: String,
        command: String,
        status: u32,
        stderr: String,
    },
    #[error("{host}: the SSH connection failed: {detail}")]
    Channel { host: String, detail: String },
}

/// A host key that could not be trusted, with what the user needs to fix it.
#[derive(Debug)]
pub struct HostKeyProblem {
    pub host: String,
    /// `address:port` as connected
    pub addr: String,
    pub address: String,
    pub port: u16,
    pub fingerprint: String,
    pub file: PathBuf,
    /// The known_hosts line that records another key (changed) or revokes this one.
    pub line: usize,
}

fn unknown_key_message(p: &HostKeyProblem) -> String {
    format!(
        "{} ({}): the host key is not known ({}).\n  Check the fingerprint with the host's owner, then record it:\n    ssh-keyscan -p {} {} >> {}\n  or run again with --accept-new-host-keys to record it on first use",
        p.host,
        p.addr,
        p.fingerprint,
        p.port,
        p.address,
        p.file.display()
    )
}

fn changed_key_message(p: &HostKeyProblem) -> String {
    format!(
        "{} ({}): THE HOST KEY HAS CHANGED: the server offers {}, line {} of {} records another key.\n  Someone may be intercepting the connection. If the host was reinstalled, remove the old key:\n    ssh-keygen -R {} -f {}\n  and run again",
        p.host,
        p.addr,
        p.fingerprint,
        p.line,
        p.file.display(),
        known_hosts::host_key_name(&p.address, p.port),
        p.file.display()
    )
}

static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `-v`: print each remote command (its first line) to stderr. Commands carry no secrets:
/// file contents travel on stdin.
pub fn trace_commands(on: bool) {
    TRACE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The sha256 of the bytes streamed from a local file, as they were sent.
    pub sent_sha256: Option<String>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// The host-key check russh calls during the handshake; the verdict is kept for the error.
struct KeyChecker {
    known_hosts: PathBuf,
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    outcome: Arc<Mutex<Option<Result<(), SshErrorSeed>>>>,
}

/// The parts of a host-key error known inside the handler.
#[derive(Debug, Clone)]
enum SshErrorSeed {
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

/// An authenticated connection to one host.
pub struct Session {
    handle: Handle<KeyChecker>,
    /// Kept open while the tunnelled connection lives.
    _bastion: Option<Handle<KeyChecker>>,
    host: String,
    user: String,
    sudo: bool,
    command_timeout: Duration,
}

fn config() -> Arc<client::Config> {
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

struct Hop<'a> {
    label: String,
    address: &'a str,
    port: u16,
    user: &'a str,
    identity: Option<&'a Path>,
}

impl Session {
    /// Connects, verifies the host key and authenticates. `name` labels errors (the inventory name).
    pub async fn connect(
        name: &str,
        t: &SshTarget,
        policy: HostKeyPolicy,
    ) -> Result<Session, SshError> {
        let connect_timeout = Duration::from_secs(t.connect_timeout_seconds);
        let target = Hop {
            label: name.to_string(),
            address: &t.address,
            port: t.port,
            user: &t.user,
            identity: t.identity_file.as_deref(),
        };
        let (handle, bastion) = match &t.bastion {
            None => {
                let stream = tcp(&target, connect_timeout).await?;
                (
                    handshake(
                        &target,
                        stream,
                        &t.known_hosts_file,
                        policy,
                        connect_timeout,
                    )
                    .await?,
                    None,
                )
            }
            Some(b) => {
                let jump = bastion_hop(name, b);
                let stream = tcp(&jump, connect_timeout).await?;
                let bh =
                    handshake(&jump, stream, &t.known_hosts_file, policy, connect_timeout).await?;
                let channel = timeout(
                    connect_timeout,
                    bh.channel_open_direct_tcpip(t.address.clone(), t.port as u32, "127.0.0.1", 0),
                )
                .await
                .map_err(|_| SshError::Timeout {
                    host: name.to_string(),
                    what: format!("opening a tunnel through the bastion {}", b.address),
                    seconds: t.connect_timeout_seconds,
                })?
                .map_err(|e| SshError::Connect {
                    host: name.to_string(),
                    addr: format!("{}:{} via bastion {}", t.address, t.port, b.address),
                    detail: e.to_string(),
                })?;
                let h = handshake(
                    &target,
                    channel.into_stream(),
                    &t.known_hosts_file,
                    policy,
                    connect_timeout,
                )
                .await?;
                (h, Some(bh))
            }
        };
        Ok(Session {
            handle,
            _bastion: bastion,
            host: name.to_string(),
            user: t.user.clone(),
            sudo: t.sudo,
            command_timeout: Duration::from_secs(t.command_timeout_seconds),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs `script` with `sh -c` (through `sudo -n` when configured) and returns its output
    /// whatever the exit status.
    pub async fn exec(&self, script: &str, stdin: Option<&[u8]>) -> Result<Output, SshError> {
        self.exec_input(script, stdin.map(Input::Bytes)).await
    }

    /// Runs `script` with the local file at `path` streamed to its stdin (an artifact upload);
    /// the time limit grows with the size, at 1 MiB/s.
    /// Returns the sha256 of the bytes sent, computed while sending.
    pub async fn run_with_file(&self, script: &str, path: &Path) -> Result<String, SshError> {
        let mut out = self.exec_input(script, Some(Input::File(path))).await?;
        let sent = out.sent_sha256.take().unwrap_or_default();
        self.check(script, out)?;
        Ok(sent)
    }

    async fn exec_input(&self, script: &str, stdin: Option<Input<'_>>) -> Result<Output, SshError> {
        if TRACE.load(std::sync::atomic::Ordering::Relaxed) {
            let lines = script.trim().lines().count();
            let more = if lines > 1 {
                format!(" (+{} lines)", lines - 1)
            } else {
                String::new()
            };
            let sent = match &stdin {
                Some(Input::Bytes(d)) => format!(" <{} bytes on stdin>", d.len()),
                Some(Input::File(p)) => format!(" <{} on stdin>", p.display()),
                None => String::new(),
            };
            eprintln!(
                "    [{}] $ {}{more}{sent}",
                self.host,
                summarize(script).trim_end_matches('…')
            );
        }
        let quoted = shell_quote(script);
        let command = if self.sudo {
            format!("sudo -n -H -- sh -c {quoted}")
        } else {
            format!("sh -c {quoted}")
        };
        let run = async {
            let mut channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.channel_error(e))?;
            channel
                .exec(true, command.as_bytes())
                .await
                .map_err(|e| self.channel_error(e))?;
            let mut sent_sha256 = None;
            match &stdin {
                Some(Input::Bytes(data)) => channel
                    .data(*data)
                    .await
                    .map_err(|e| self.channel_error(e))?,
                Some(Input::File(path)) => {
                    let file =
                        tokio::fs::File::open(path)
                            .await
                            .map_err(|e| SshError::Channel {
                                host: self.host.clone(),
                                detail: format!("{}: {e}", path.display()),
                            })?;
                    // big chunks: russh splits them into full packets (tokio's copy would send
                    // 8 KiB packets, at a quarter of the throughput); hashed as they are sent
                    use sha2::Digest;
                    use tokio::io::AsyncReadExt;
                    let mut file = file;
                    let mut hasher = sha2::Sha256::default();
                    let mut buf = vec![0u8; 1 << 18];
                    loop {
                        let n = file.read(&mut buf).await.map_err(|e| SshError::Channel {
                            host: self.host.clone(),
                            detail: format!("{}: {e}", path.display()),
                        })?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        channel
                            .data_bytes(buf[..n].to_vec())
                            .await
                            .map_err(|e| self.channel_error(e))?;
                    }
                    sent_sha256 = Some(hex::encode(hasher.finalize()));
                }
                None => {}
            }
            channel.eof().await.map_err(|e| self.channel_error(e))?;
            let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
            // the exit status may arrive after EOF: read until the channel closes
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        stderr.extend_from_slice(
                            format!("killed by signal {signal_name:?}").as_bytes(),
                        );
                        status = Some(128);
                    }
                    _ => {}
                }
            }
            let status = status.ok_or_else(|| SshError::Channel {
                host: self.host.clone(),
                detail: "the connection closed before the command finished".into(),
            })?;
            Ok(Output {
                status,
                stdout,
                stderr,
                sent_sha256,
            })
        };
        let limit = self.command_timeout + upload_allowance(&stdin);
        let out = timeout(limit, run).await.map_err(|_| SshError::Timeout {
            host: self.host.clone(),
            what: format!("`{}`", summarize(script)),
            seconds: limit.as_secs(),
        })??;
        if self.sudo && out.status == 1 && is_sudo_password_prompt(&out.stderr) {
            return Err(SshError::SudoPassword {
                host: self.host.clone(),
                user: self.user.clone(),
            });
        }
        Ok(out)
    }

    /// Runs `script` and fails unless it exits 0; returns stdout.
    pub async fn run(&self, script: &str) -> Result<String, SshError> {
        self.run_with_input(script, None).await
    }

    pub async fn run_with_input(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<String, SshError> {
        let out = self.exec(script, stdin).await?;
        self.check(script, out)
    }

    fn check(&self, script: &str, out: Output) -> Result<String, SshError> {
        if out.status != 0 {
            return Err(SshError::Command {
                host: self.host.clone(),
                command: summarize(script),
                status: out.status,
                stderr: out.stderr_text(),
            });
        }
        Ok(out.stdout_text())
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    fn channel_error(&self, e: russh::Error) -> SshError {
        SshError::Channel {
            host: self.host.clone(),
            detail: e.to_string(),
        }
    }
}

fn bastion_hop<'a>(name: &str, b: &'a Bastion) -> Hop<'a> {
    Hop {
        label: format!("{name} (bastion {})", b.address),
        address: &b.address,
        port: b.port,
        user: &b.user,
        identity: b.identity_file.as_deref(),
    }
}

async fn tcp(hop: &Hop<'_>, limit: Duration) -> Result<tokio::net::TcpStream, SshError> {
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

async fn handshake<S>(
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

fn host_key_error(hop: &Hop<'_>, addr: &str, file: &Path, seed: SshErrorSeed) -> SshError {
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

/// An explicit identity file, or else ssh-agent and then the usual key files.
async fn authenticate(hop: &Hop<'_>, handle: &mut Handle<KeyChecker>) -> Result<(), SshError> {
    let mut tried = Vec::new();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let auth_err = |detail: String| SshError::Channel {
        host: hop.label.clone(),
        detail,
    };
    let files: Vec<PathBuf> = match hop.identity {
        Some(p) => vec![p.to_path_buf()],
        None => {
            if let Ok(mut agent) = AgentClient::connect_env().await
                && let Ok(ids) = agent.request_identities().await
            {
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    tried.push(format!("agent key {comment}"));
                    let r = handle
                        .authenticate_publickey_with(hop.user, key, rsa_hash, &mut agent)
                        .await;
                    if matches!(r, Ok(russh::client::AuthResult::Success)) {
                        return Ok(());
                    }
                }
            }
            let home = crate::inventory::expand_home("~/.ssh");
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| home.join(f))
                .filter(|p| p.is_file())
                .collect()
        }
    };
    for file in files {
        tried.push(file.display().to_string());
        let key = load_secret_key(&file, None).map_err(|e| SshError::Key {
            host: hop.label.clone(),
            file: file.clone(),
            detail: match e {
                russh::keys::Error::KeyIsEncrypted => {
                    "it is encrypted: add it to ssh-agent (ssh-add) and leave identityFile out"
                        .into()
                }
                other => other.to_string(),
            },
        })?;
        check_key_mode(hop, &file)?;
        let r = handle
            .authenticate_publickey(
                hop.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash),
            )
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        if r.success() {
            return Ok(());
        }
    }
    Err(SshError::Auth {
        host: hop.label.clone(),
        user: hop.user.to_string(),
        tried: if tried.is_empty() {
            "no key: no identityFile, no ssh-agent, no ~/.ssh/id_*".into()
        } else {
            tried.join(", ")
        },
    })
}

/// OpenSSH refuses private keys others can read; so do we.
fn check_key_mode(hop: &Hop<'_>, file: &Path) -> Result<(), SshError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(SshError::Key {
            host: hop.label.clone(),
            file: file.to_path_buf(),
            detail: format!(
                "its mode is {mode:o}; others may read it: chmod 600 {}",
                file.display()
            ),
        });
    }
    Ok(())
}

fn is_sudo_password_prompt(stderr: &[u8]) -> bool {
    let s = String::from_utf8_lossy(stderr);
    s.contains("a password is required") || s.contains("a terminal is required")
}

/// Quotes a string for POSIX sh as one word.
/// What a command reads on stdin.
enum Input<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Extra time a command gets for the data it is sent: one second per MiB.
fn upload_allowance(stdin: &Option<Input<'_>>) -> Duration {
    let bytes = match stdin {
        Some(Input::Bytes(d)) => d.len() as u64,
        Some(Input::File(p)) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        None => 0,
    };
    Duration::from_secs(bytes >> 20)
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The first line of a script, for error messages.
fn summarize(script: &str) -> String {
    let first = script.trim().lines().next().unwrap_or("");
    if first.len() > 120 || script.trim().lines().count() > 1 {
        format!("{}…", &first[..first.floor_char_boundary(120)])
    } else {
        first.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("echo 'a b'"), r"'echo '\''a b'\'''");
    }

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(summarize("true"), "true");
        assert_eq!(summarize("a\nb"), "a…");
        assert!(summarize(&"x".repeat(500)).chars().count() <= 121);
    }
}
