//! The README's main command works every time: `scripts/demo`, `scripts/testbed downall` (as
//! the README suggests), then `scripts/demo` again, each a verified cluster. (The second run once
//! stopped at kubeconfig/admin: the first run's admin kubeconfig was of a cluster gone with
//! its machines.) Real-cluster tier: needs the upstream builds.

mod support;
use std::path::Path;
use std::process::Command;

fn run(script: &str, args: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join(script))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_demo_runs_twice_in_a_row_with_a_teardown_between() {
    if support::upstream_or_skip("the demo, twice").is_none() {
        return;
    }
    support::ensure_images();
    for round in 1..=2 {
        let (ok, text) = run("scripts/demo", &[]);
        let tail: String = text
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(ok, "demo run {round} failed:\n{tail}");
        assert!(text.contains("\ninit done in "), "run {round}:\n{tail}");
        assert!(text.contains("\njoin done in "), "run {round}:\n{tail}");
        // join ends with verify on all three nodes, DNS included
        assert!(
            text.contains("verify") && !text.contains("FAILED"),
            "run {round}:\n{tail}"
        );
        let (ok, text) = run("scripts/testbed", &["downall"]);
        assert!(ok, "downall: {text}");
    }
}
