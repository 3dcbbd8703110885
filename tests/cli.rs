//! The command line as a shell user meets it: completions run in a real bash, `--version`, the
//! manual page.

use std::process::Command;

const PROVISION: &str = env!("CARGO_BIN_EXE_provision");

/// What bash completes for `words` (the last one being typed), through the script of
/// `provision completion bash`.
fn bash_completes(words: &[&str], dir: &std::path::Path) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <({PROVISION} completion bash) || exit 3\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_TYPE=9\n\
         _clap_complete_provision provision '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = quoted.join(" "),
        cword = words.len() - 1,
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_phase_paths_of_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let got = bash_completes(&["provision", "init", "phase", "c"], dir.path());
    for want in [
        "certs",
        "certs/ca",
        "certs/apiserver",
        "cni",
        "control-plane",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} not in {got:?}");
    }
    assert!(got.iter().all(|g| g.starts_with('c')), "{got:?}");
    // join has no bootstrap or addons phase; init has
    let init = bash_completes(&["provision", "init", "phase", "a"], dir.path());
    let join = bash_completes(&["provision", "join", "phase", "a"], dir.path());
    assert!(init.contains(&"addons".to_string()), "{init:?}");
    assert!(
        !join.contains(&"addons".to_string()) && join.contains(&"artifacts".to_string()),
        "{join:?}"
    );
    // subcommands too
    let commands = bash_completes(&["provision", "st"], dir.path());
    assert_eq!(commands, ["status"]);
}

#[test]
fn bash_completes_host_names_from_the_inventory_on_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("inv.yaml"),
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: cp1, address: 10.244.1.11, roles: [control-plane]}\n  - {name: worker-1, address: 10.244.1.12, roles: [worker]}\n  - {name: worker-2, address: 10.244.1.13, roles: [worker]}\n",
    )
    .unwrap();
    let got = bash_completes(
        &["provision", "join", "-i", "inv.yaml", "--hosts", "w"],
        dir.path(),
    );
    assert_eq!(got, ["worker-1", "worker-2"]);
    // after a comma: the names not yet listed, with what is before the comma kept
    let got = bash_completes(
        &[
            "provision",
            "reset",
            "-i",
            "inv.yaml",
            "--hosts",
            "worker-1,",
        ],
        dir.path(),
    );
    assert_eq!(got, ["worker-1,cp1", "worker-1,worker-2"]);
    // no inventory on the line: nothing to offer, and no error
    let got = bash_completes(&["provision", "join", "--hosts", "w"], dir.path());
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn zsh_and_fish_scripts_call_this_binary_back() {
    for shell in ["zsh", "fish"] {
        let out = Command::new(PROVISION)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(PROVISION), "{shell}: {script}");
    }
}

#[test]
fn version_names_the_default_kubernetes_and_the_manual_page_renders() {
    let out = Command::new(PROVISION).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let default = provision::version::Version::default_version().to_string();
    assert_eq!(
        text.trim(),
        format!(
            "provision {} (Kubernetes {default} by default)",
            env!("CARGO_PKG_VERSION")
        )
    );
    let out = Command::new(PROVISION).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH provision"),
        "{page}"
    );
    for command in [
        "init",
        "join",
        "reset",
        "status",
        "kubeconfig",
        "completion",
    ] {
        assert!(
            page.contains(command),
            "{command} is not in the manual page"
        );
    }
}

#[test]
fn the_last_control_plane_cannot_leave_while_nodes_stay_and_the_error_reads_as_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yaml");
    std::fs::write(
        &inv,
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  networking: {podSubnet: 10.88.0.0/16}\n  hosts:\n  - {name: cp1, address: 10.244.1.11, roles: [control-plane]}\n  - {name: worker-1, address: 10.244.1.12, roles: [worker]}\n",
    )
    .unwrap();
    let out = Command::new(PROVISION)
        .args([
            "reset",
            "-i",
            inv.to_str().unwrap(),
            "--hosts",
            "cp1",
            "--yes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("every control plane would leave while other nodes stay (worker-1): the cluster would have no API. Reset the whole cluster (no --hosts), or keep a control plane"),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(!line.contains("  "), "stray spaces: {line:?}");
}
