//! Shell completions (clap_complete's dynamic engine): the shell script asks the binary itself,
//! so `init phase c<TAB>` lists the phases of the running release, and `--hosts <TAB>` the hosts
//! of the inventory named by `-i` on the same line.

use crate::phases::{self, Phase};
use clap_complete::engine::CompletionCandidate;
use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;

/// The variable that turns a run of the binary into a completion request.
pub const VAR: &str = "COMPLETE";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the script that registers the completions in `shell`; it calls `binary` back.
pub fn write_script(shell: Shell, binary: &str, out: &mut dyn Write) -> std::io::Result<()> {
    use clap_complete::env::EnvCompleter;
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &clap_complete::env::Bash,
        Shell::Zsh => &clap_complete::env::Zsh,
        Shell::Fish => &clap_complete::env::Fish,
    };
    completer.write_registration(VAR, "provision", "provision", binary, out)
}

/// The words of the command line being completed (after the `--` of a completion request).
fn words() -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => Vec::new(),
    }
}

/// Phase paths of the command on the line (init, join or reset) that start with `current`.
pub fn phase_paths(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let words = words();
    let tree: Vec<Phase> = match words
        .iter()
        .find(|w| ["init", "join", "reset"].contains(&w.as_str()))
    {
        Some(w) if w == "join" => phases::join_tree(),
        Some(w) if w == "reset" => phases::reset::tree(true),
        _ => phases::init_tree(),
    };
    phases::paths(&tree)
        .into_iter()
        .filter(|(path, _)| path.starts_with(current.as_ref()))
        .map(|(path, phase)| CompletionCandidate::new(path).help(Some(phase.summary.into())))
        .collect()
}

/// Host names of the inventory given with `-i`/`--inventory` on the line, but those already
/// listed before a comma (clap completes the part after the last comma).
pub fn host_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let words = words();
    let Some(file) = inventory_of(&words) else {
        return Vec::new();
    };
    let Ok(loaded) = crate::inventory::load(&file) else {
        return Vec::new();
    };
    // the word under the cursor, as the shell script numbers the words
    let typed = std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| words.get(i).cloned())
        .unwrap_or_default();
    let mut listed: Vec<&str> = typed.split(',').collect();
    listed.pop();
    loaded
        .inventory
        .spec
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|n| n.starts_with(current.as_ref()) && !listed.contains(n))
        .map(CompletionCandidate::new)
        .collect()
}

/// The value of `-i FILE`, `-iFILE`, `--inventory FILE` or `--inventory=FILE`.
fn inventory_of(words: &[String]) -> Option<PathBuf> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "-i" || w == "--inventory" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = w.strip_prefix("--inventory=") {
            return Some(PathBuf::from(v));
        }
        if let Some(v) = w.strip_prefix("-i").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_inventory_in_every_spelling() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        for line in [
            "provision join -i a.yaml --hosts",
            "provision join -ia.yaml --hosts",
            "provision join --inventory a.yaml --hosts",
            "provision join --inventory=a.yaml --hosts",
        ] {
            assert_eq!(
                inventory_of(&w(line)),
                Some(PathBuf::from("a.yaml")),
                "{line}"
            );
        }
        assert_eq!(inventory_of(&w("provision join --hosts")), None);
    }
}
