//! SSH transport (russh): one connection per host, reused by every phase.
//!
//! Commands run through `sh -c` (and `sudo -n` for non-root users). Secrets never appear on a
//! command line: file contents travel on stdin.

mod auth;
mod connect;
mod error;
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

use auth::authenticate;
use connect::{Hop, KeyChecker, bastion_hop, handshake, tcp};
pub use error::{HostKeyProblem, SshError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse hosts whose key is not recorded (the default).
    Strict,
    /// Record keys of unknown hosts; still refuse changed keys.
    AcceptNew,
}

static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// When tracing began: each command's end is printed as seconds since.
static TRACE_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// With `-v`: print each remote command (its first line) to stderr, then its exit status, how
/// long it took and when it ended (seconds since the run began).
/// Commands carry no secrets: file contents travel on stdin.
pub fn trace_commands(on: bool) {
    TRACE_START.get_or_init(std::time::Instant::now);
    TRACE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// With `-v`: print that a stage of the run ended (`what`, at seconds since the run began),
/// for the stages whose work is not a remote command (API calls, waits).
pub fn trace_mark(what: &str) {
    if TRACE.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "    {what} (at {:.3}s)",
            TRACE_START.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
        );
    }
}

/// `work`, then `trace_mark(what)`.
pub async fn traced<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    let out = work.await;
    trace_mark(what);
    out
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

    /// `run_with_file`, returning the output whatever the exit status.
    pub async fn exec_file(&self, script: &str, path: &Path) -> Result<Output, SshError> {
        self.exec_input(script, Some(Input::File(path))).await
    }

    async fn exec_input(&self, script: &str, stdin: Option<Input<'_>>) -> Result<Output, SshError> {
        let started = std::time::Instant::now();
        let traced = TRACE.load(std::sync::atomic::Ordering::Relaxed);
        if traced {
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
        if traced {
            eprintln!(
                "    [{}] exit {} after {:.3}s (at {:.3}s)",
                self.host,
                out.status,
                started.elapsed().as_secs_f64(),
                TRACE_START.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
            );
        }
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
pub(crate) fn summarize(script: &str) -> String {
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
