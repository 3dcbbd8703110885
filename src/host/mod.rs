//! Desired state on hosts: actions, facts, diff, executor (DESIGN §1).

pub mod action;
pub mod batch;
pub mod diff;
pub mod executor;
pub mod facts;
pub mod probe;
pub mod read;

pub use action::{Action, UnitSpec};

/// What `script` printed when run by `sh` here, which must succeed: the host scripts'
/// tests run them on a directory of their own (plain shell and coreutils).
#[cfg(test)]
pub(crate) fn sh(script: &str) -> Result<String, Box<dyn std::error::Error>> {
    sh_with(script, None, &[])
}

/// `sh`, with the commands of `stand_ins` (a directory of `stand_in`s) found first, and `env`.
#[cfg(test)]
pub(crate) fn sh_with(
    script: &str,
    stand_ins: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", script]).envs(env.iter().copied());
    if let Some(dir) = stand_ins {
        cmd.env("PATH", format!("{}:/usr/bin:/bin", dir.display()));
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{script} failed: {out:?}").into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Writes `body` as the executable `dir/name`: a stand-in for a command this machine lacks
/// (no systemd in a test here; the test bed runs the real one).
#[cfg(test)]
pub(crate) fn stand_in(dir: &std::path::Path, name: &str, body: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, body)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
}

/// What a component leaves on a host, for `reset` to remove: its units (stopped and disabled),
/// files and directories, network links, packet-filter chain prefixes (with the rules that
/// jump to them), ipset name prefixes, and directories below which mounts are undone.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    pub units: Vec<String>,
    pub paths: Vec<String>,
    pub links: Vec<String>,
    pub chains: Vec<String>,
    pub ipsets: Vec<String>,
    pub mounts: Vec<String>,
    /// Priorities of routing rules (`ip rule`), in both families.
    pub rule_prefs: Vec<u32>,
}
