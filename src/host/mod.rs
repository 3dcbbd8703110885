//! Desired state on hosts: actions, facts, diff, executor (DESIGN §1).

pub mod action;
pub mod diff;
pub mod executor;
pub mod facts;
pub mod probe;
pub mod read;

pub use action::{Action, UnitSpec};

/// What `script` printed when run by `sh` here, which must succeed: the host scripts'
/// tests run them on a directory of their own (plain shell and coreutils).
#[cfg(test)]
pub(crate) fn sh(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
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
}
