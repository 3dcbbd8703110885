//! What can go wrong on the way to a host, each with what the user should do.

use super::*;

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

pub(super) fn unknown_key_message(p: &HostKeyProblem) -> String {
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

pub(super) fn changed_key_message(p: &HostKeyProblem) -> String {
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
