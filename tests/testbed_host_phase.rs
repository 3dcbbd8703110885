//! The `host` phase through the executor on a real machine: dry run, apply, idempotent re-run,
//! drift repair, and a run whose SSH connection is killed mid-phase.

mod support;
use support::{Testbed, provision};

const SYSCTL_FILE: &str = "/etc/sysctl.d/99-provision.conf";

fn init(inv: &std::path::Path, extra: &[&str]) -> support::Run {
    let mut args = vec![
        "init",
        "-i",
        inv.to_str().unwrap(),
        "--skip-phases",
        support::SKIP_PREFLIGHT_AND_CLUSTER,
    ];
    args.extend_from_slice(extra);
    provision(&args)
}

#[test]
fn dry_run_changes_nothing_then_apply_then_nothing_left_to_do() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &[]);
    let state = "cat /proc/sys/net/ipv4/ip_forward; ls /etc/sysctl.d /etc/modules-load.d; test -e /etc/kubernetes && echo has-kubernetes; true";
    let before = tb.ssh(0, state);
    assert!(
        before.starts_with("0\n"),
        "a fresh machine forwards already: {before}"
    );

    let dry = init(&inv, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert!(
        dry.stdout.contains(&format!("create {SYSCTL_FILE}")),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("+net.ipv4.ip_forward = 1"),
        "no diff shown: {}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("set net.ipv4.ip_forward = 1 (was 0)"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("would make"), "{}", dry.stdout);
    assert_eq!(tb.ssh(0, state), before, "the dry run changed the machine");

    let first = init(&inv, &["--output", "json"]);
    assert_eq!(first.code, 0, "{}", first.text());
    assert!(first.changes() >= 6, "{}", first.text());
    assert_eq!(tb.ssh(0, "cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    assert_eq!(
        tb.ssh(0, &format!("stat -c '%a %U' {SYSCTL_FILE}")).trim(),
        "644 root"
    );
    assert!(
        tb.ssh(0, &format!("cat {SYSCTL_FILE}"))
            .contains("net.bridge.bridge-nf-call-iptables = 1")
    );
    assert_eq!(
        tb.ssh(0, "stat -c %a /etc/kubernetes/pki/etcd").trim(),
        "755"
    );

    let second = init(&inv, &["--output", "json"]);
    assert_eq!(second.code, 0, "{}", second.text());
    assert_eq!(
        second.changes(),
        0,
        "second run changed things: {}",
        second.text()
    );
    let text = init(&inv, &[]);
    assert!(text.stdout.contains("made 0 changes"), "{}", text.stdout);

    // drift: a mode and a kernel value changed behind provision's back are put right, nothing else
    tb.ssh(
        0,
        &format!("chmod 600 {SYSCTL_FILE}; echo 0 > /proc/sys/net/ipv4/ip_forward"),
    );
    let repair = init(&inv, &["--output", "json", "-v"]);
    assert_eq!(repair.changes(), 2, "{}", repair.text());
    // -v shows the remote commands, never file contents
    let traced = format!("[{}] $ # provision: read the state of", tb.machines[0].name);
    assert!(repair.stderr.contains(&traced), "{}", repair.stderr);
    assert!(
        !repair.stderr.contains("net.ipv4.ip_forward = 1"),
        "{}",
        repair.stderr
    );
    assert_eq!(
        tb.ssh(
            0,
            &format!("stat -c %a {SYSCTL_FILE}; cat /proc/sys/net/ipv4/ip_forward")
        ),
        "644\n1\n"
    );
}

#[test]
fn a_run_whose_connection_is_killed_mid_phase_completes_when_run_again() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &[]);
    // The first `chown` the executor runs kills every root SSH session on the machine (the
    // connection drops after a file's content was sent, before it is renamed into place), then
    // removes itself.
    tb.ssh(
        0,
        "printf '#!/bin/sh\\nrm -f /usr/local/bin/chown\\npkill -KILL -f \"sshd: root@notty\"\\nexit 1\\n' > /usr/local/bin/chown && chmod 755 /usr/local/bin/chown",
    );
    let broken = init(&inv, &[]);
    assert_eq!(broken.code, 1, "{}", broken.text());
    assert!(
        broken.stdout.contains(&tb.machines[0].name),
        "{}",
        broken.stdout
    );
    assert!(
        broken.stdout.contains("Phase host/kernel failed"),
        "{}",
        broken.stdout
    );
    // nothing half-written took the target's place
    assert_eq!(
        tb.ssh(
            0,
            "ls /etc/modules-load.d/ | grep -c '^provision.conf$' || true"
        )
        .trim(),
        "0"
    );

    let again = init(&inv, &["--output", "json"]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(again.changes() > 0);
    assert_eq!(init(&inv, &["--output", "json"]).changes(), 0);
    // the interrupted upload left no temporary file behind
    let leftovers = tb.ssh(
        0,
        "ls -a /etc/modules-load.d /etc/sysctl.d | grep provision- || true",
    );
    assert_eq!(leftovers.trim(), "", "temporary files left: {leftovers}");
}

/// A dry run of the whole of `init` on a machine that has nothing yet: every phase plans its
/// work (the add-ons without an API server to validate them) and nothing on the machine changes.
#[test]
fn a_dry_run_of_all_of_init_on_a_fresh_machine_plans_every_phase_and_changes_nothing() {
    let tb = Testbed::up_for_kubelet(1);
    let bundle = support::testbed_bundle(tb.dir.path(), None);
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    let state =
        "ls /etc/kubernetes /etc/systemd/system/kubelet.service /usr/local/bin/kubelet 2>&1; true";
    let before = tb.ssh(0, state);

    let dry = provision(&["init", "-i", inv.to_str().unwrap(), "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    for planned in [
        // leaves under their group's header: `==> certs`, then `ca` with its host
        "==> certs\n    ca ",
        "==> control-plane",
        "==> csr-approver",
        "==> kubelet",
        "==> network-policy",
        "==> addons",
        "not validated by the API server",
    ] {
        assert!(
            dry.stdout.contains(planned),
            "{planned} missing:\n{}",
            dry.stdout
        );
    }
    assert_eq!(tb.ssh(0, state), before, "the dry run changed the machine");
}
