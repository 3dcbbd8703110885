//! The SSH transport against real sshd: strict host keys, trust on first use, sudo, ssh-agent,
//! and a bastion.

mod support;
use std::process::Command;
use support::{Testbed, provision};

fn preflight(inv: &std::path::Path, extra: &[&str]) -> support::Run {
    let mut args = vec!["init", "phase", "preflight", "-i", inv.to_str().unwrap()];
    args.extend_from_slice(extra);
    provision(&args)
}

#[test]
fn host_keys_are_checked_strictly() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &[]);
    let m = &tb.machines[0];
    let recorded = std::fs::read_to_string(tb.known_hosts()).unwrap();

    // unknown host: refused, with the fix
    std::fs::write(tb.known_hosts(), "").unwrap();
    let r = preflight(&inv, &[]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(
        r.stdout
            .contains("the host key is not known (ssh-ed25519 SHA256:"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "ssh-keyscan -p 22 {} >> {}",
            m.address,
            tb.known_hosts().display()
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_to_string(tb.known_hosts()).unwrap(),
        "",
        "strict mode wrote known_hosts"
    );

    // --accept-new-host-keys records exactly the machine's key; strict mode then trusts it
    let r = preflight(&inv, &["--accept-new-host-keys"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let learned = std::fs::read_to_string(tb.known_hosts()).unwrap();
    assert_eq!(
        learned.trim(),
        recorded.trim(),
        "learned entry differs from the machine's key"
    );
    assert_eq!(preflight(&inv, &[]).code, 0);

    // changed key: refused, even with --accept-new-host-keys
    let other = tb.dir.path().join("other");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let fields: Vec<&str> = pubkey.split_whitespace().collect();
    std::fs::write(
        tb.known_hosts(),
        format!("# old entry\n{} {} {}\n", m.address, fields[0], fields[1]),
    )
    .unwrap();
    for extra in [&[][..], &["--accept-new-host-keys"][..]] {
        let r = preflight(&inv, extra);
        assert_eq!(r.code, 1, "{}", r.text());
        assert!(
            r.stdout.contains("THE HOST KEY HAS CHANGED"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains(&format!("line 2 of {}", tb.known_hosts().display())),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!("ssh-keygen -R {}", m.address)),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn non_root_users_work_through_sudo_and_a_password_prompt_is_a_clear_error() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &["      ssh: {user: ops}\n"]);
    let r = provision(&[
        "init",
        "-i",
        inv.to_str().unwrap(),
        "--skip-phases",
        support::SKIP_PREFLIGHT_AND_CLUSTER,
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.changes() > 0);
    // files made through sudo belong to root
    assert_eq!(
        tb.ssh(0, "stat -c %U:%a /etc/sysctl.d/99-provision.conf")
            .trim(),
        "root:644"
    );
    // preflight sees uid 0 through sudo
    assert_eq!(preflight(&inv, &[]).code, 0);

    let inv = tb.inventory("", &["      ssh: {user: locked}\n"]);
    let r = preflight(&inv, &[]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(
        r.stdout.contains("sudo asks locked for a password"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("NOPASSWD"), "{}", r.stdout);
}

#[test]
fn keys_from_ssh_agent_are_used_when_no_identity_file_is_given() {
    let tb = Testbed::up(1);
    let home = tb.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let sock = tb.dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let added = Command::new("ssh-add")
        .arg(tb.key())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let inv = tb.inventory("", &[]);
    let text = std::fs::read_to_string(&inv).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("identityFile"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&inv, text).unwrap();

    let run = |sock: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_provision"))
            .args(["init", "phase", "preflight", "-i"])
            .arg(&inv)
            .env("HOME", &home)
            .env("SSH_AUTH_SOCK", sock)
            .output()
            .unwrap()
    };
    let with_agent = run(&sock);
    let without = run(&tb.dir.path().join("no-agent.sock"));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        with_agent.status.success(),
        "{}",
        String::from_utf8_lossy(&with_agent.stdout)
    );
    assert_eq!(without.status.code(), Some(1));
    let out = String::from_utf8_lossy(&without.stdout);
    assert!(out.contains("authentication as root failed"), "{out}");
}

#[test]
fn a_bastion_reaches_hosts_the_operator_cannot() {
    let tb = Testbed::up(2);
    let (bastion, target) = (&tb.machines[0], &tb.machines[1]);
    // the target refuses SSH from the operator's bridge address; only the bastion gets through
    tb.ssh(
        1,
        "iptables -I INPUT -p tcp --dport 22 -s 10.244.1.1 -j REJECT",
    );
    let inv = tb.dir.path().join("bastion.yaml");
    std::fs::write(
        &inv,
        format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: b}}\nspec:\n  networking: {{podSubnet: 10.88.0.0/16}}\n{}  ssh:\n    identityFile: {}\n    knownHostsFile: {}\n    bastion: {{address: {}}}\n  hosts:\n  - {{name: {}, address: {}, roles: [control-plane]}}\n",
            // the test machines share this machine's disk: the kubelet's thresholds of the test bed
            support::TESTBED_EVICTION,
            tb.key().display(),
            tb.known_hosts().display(),
            bastion.address,
            target.name,
            target.address
        ),
    )
    .unwrap();
    let r = preflight(&inv, &[]);
    assert_eq!(r.code, 0, "{}", r.text());
    // and without the bastion the same host is unreachable
    let direct = inv.with_file_name("direct.yaml");
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        &format!("    bastion: {{address: {}}}\n", bastion.address),
        "",
    );
    std::fs::write(&direct, text).unwrap();
    let r = preflight(&direct, &[]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stdout.contains("cannot connect to"), "{}", r.stdout);
}
