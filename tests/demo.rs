//! The README's main command works every time: `scripts/demo`, `scripts/testbed downall` (as
//! the README suggests), then `scripts/demo` again, each a verified cluster. (The second run once
//! stopped at kubeconfig/admin: the first run's admin kubeconfig was of a cluster gone with
//! its machines.) Real-cluster tier: needs the upstream builds.

mod support;
use std::path::Path;
use std::process::Command;

/// Runs a script: whether it succeeded, its stdout (provision's report) and its stderr (the
/// builds' progress, errors).
fn run(script: &str, args: &[&str]) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join(script))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn the_demo_runs_twice_in_a_row_with_a_teardown_between() {
    if support::upstream_or_skip("the demo, twice").is_none() {
        return;
    }
    support::ensure_images();
    for round in 1..=2 {
        let (ok, text, errors) = run("scripts/demo", &[]);
        let report = format!("{}\n--- stderr:\n{}", tail(&text, 60), tail(&errors, 20));
        assert!(ok, "demo run {round} failed:\n{report}");
        assert!(text.contains("\ninit done in "), "run {round}:\n{report}");
        assert!(text.contains("\njoin done in "), "run {round}:\n{report}");
        // the verify table closes the demo: its header, and a DNS row that passed
        assert!(
            text.contains("CHECK ")
                && text
                    .lines()
                    .any(|l| l.starts_with("dns ") && l.contains(" ok ")),
            "run {round}:\n{report}"
        );
        // join ends with verify on all three nodes, DNS included
        assert!(
            text.contains("verify") && !text.contains("FAILED"),
            "run {round}:\n{report}"
        );
        let (ok, text, errors) = run("scripts/testbed", &["downall"]);
        assert!(ok, "downall: {text}{errors}");
    }
}
