//! The real-cluster tier, from the operator's chair: `init`'s grouped text output, the admin's
//! kubeconfig merged into a file of other clusters and used by kubectl, a person's certificate
//! that RBAC refuses until it is bound, and `status` on a healthy cluster, with a stopped
//! kubelet and with a changed file. One control plane and one worker.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Testbed, provision, provision_ok};

/// kubectl from the upstream builds, run on this machine.
fn kubectl(upstream: &Path, version: &str, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let binary = find(&upstream.join("kubernetes").join(version), "kubectl")
        .unwrap_or_else(|| panic!("no kubectl under {}", upstream.display()));
    let out = Command::new(binary)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) && p.is_file() {
            return Some(p);
        }
        if p.is_dir()
            && let Some(found) = find(&p, name)
        {
            return Some(found);
        }
    }
    None
}

/// The output with what differs from run to run written as placeholders: timings, the
/// machines' names and addresses, the test's directory, sizes.
fn masked(text: &str, tb: &Testbed) -> String {
    let mut t = provision::output::mask_timings(text);
    t = t.replace(&tb.dir.path().display().to_string(), "<dir>");
    for (i, m) in tb.machines.iter().enumerate() {
        let role = if i == 0 { "cp" } else { "worker" };
        t = t.replace(&m.address, &format!("<{role}-address>"));
        t = t.replace(&m.name, &format!("<{role}>"));
    }
    t.lines()
        .map(|l| match l.find(" uploaded") {
            Some(end) => {
                let start = l[..end].rfind(", ").map_or(0, |s| s + 2);
                format!("{}<size>{}", &l[..start], &l[end..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const TWO_OTHERS: &str = r#"apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod
  cluster: {server: "https://prod.example.com:6443", certificate-authority-data: UFJPRCBDQQ==}
- name: lab
  cluster: {server: "https://lab.example.com:6443", insecure-skip-tls-verify: true}
users:
- name: prod
  user: {token: not-a-real-token}
- name: lab
  user: {username: lab, password: not-a-real-password}
contexts:
- name: prod
  context: {cluster: prod, user: prod, namespace: payments}
- name: lab
  context: {cluster: lab, user: lab}
"#;

#[test]
fn an_operator_reads_grouped_output_merges_kubeconfigs_issues_users_and_asks_for_status() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    let tb = Testbed::up_for_kubelet(2);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let version = support::bundle_kube_version(&bundle);
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    let inv_s = inv.to_str().unwrap();
    let (cp, worker) = (&tb.machines[0].name, &tb.machines[1].name);

    // init's text output: leaves under their group's header, one line per leaf and host
    let init = provision_ok(&["init", "-i", inv_s]);
    insta::assert_snapshot!("init_text_output", masked(&init.stdout, &tb));
    provision_ok(&["join", "-i", inv_s]);

    // printed: the admin kubeconfig init wrote beside the inventory
    let printed = provision_ok(&["kubeconfig", "-i", inv_s]);
    let local = std::fs::read_to_string(tb.dir.path().join("test-admin.conf")).unwrap();
    assert_eq!(printed.stdout, local);

    // merged into a file of two other clusters: kubectl reaches this one by its context,
    // and the others' entries are as they were
    let config = tb.dir.path().join("kube-config");
    std::fs::write(&config, TWO_OTHERS).unwrap();
    let c = config.to_str().unwrap();
    let merged = provision_ok(&["kubeconfig", "-i", inv_s, "--merge", c]);
    assert!(
        merged.stdout.contains("merged context \"test\""),
        "{}",
        merged.text()
    );
    let (ok, nodes) = kubectl(
        &upstream,
        &version,
        &config,
        &["--context", "test", "get", "nodes"],
    );
    assert!(
        ok && nodes.contains(cp) && nodes.contains(worker),
        "{nodes}"
    );
    let before: serde_yaml::Value = serde_yaml::from_str(TWO_OTHERS).unwrap();
    let after: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for list in ["clusters", "users", "contexts"] {
        for (i, entry) in before[list].as_sequence().unwrap().iter().enumerate() {
            assert_eq!(&after[list][i], entry, "{list}[{i}]");
        }
    }
    assert_eq!(after["current-context"], before["current-context"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = provision_ok(&["kubeconfig", "-i", inv_s, "--merge", c]);
    assert!(again.stdout.contains("unchanged"), "{}", again.text());

    // a person in two groups: refused by RBAC until the second group is bound
    let alice = provision_ok(&[
        "kubeconfig",
        "-i",
        inv_s,
        "--user",
        "alice",
        "--group",
        "dev,ops",
        "--days",
        "7",
        "--merge",
        c,
    ]);
    assert!(alice.stdout.contains("alice@test"), "{}", alice.text());
    let as_alice = [
        "--context",
        "alice@test",
        "get",
        "pods",
        "-n",
        "kube-system",
    ];
    let (ok, said) = kubectl(&upstream, &version, &config, &as_alice);
    assert!(
        !ok && said.contains("forbidden") && said.contains("\"alice\""),
        "{said}"
    );
    let admin = tb.dir.path().join("test-admin.conf");
    let (ok, said) = kubectl(
        &upstream,
        &version,
        &admin,
        &[
            "create",
            "rolebinding",
            "ops-view",
            "--clusterrole=view",
            "--group=ops",
            "-n",
            "kube-system",
        ],
    );
    assert!(ok, "{said}");
    let (ok, said) = kubectl(&upstream, &version, &config, &as_alice);
    assert!(ok && said.contains("coredns"), "{said}");
    // but only where it was bound
    let (ok, said) = kubectl(
        &upstream,
        &version,
        &config,
        &["--context", "alice@test", "get", "pods"],
    );
    assert!(!ok && said.contains("forbidden"), "{said}");

    // status: all is well
    let status = provision(&["status", "-i", inv_s]);
    assert_eq!(status.code, 0, "{}", status.text());
    assert!(status.stdout.contains("all is well"), "{}", status.stdout);
    let json = provision(&["status", "-i", inv_s, "--output", "json"]);
    let s: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(s["api"], "ok");
    for h in s["hosts"].as_array().unwrap() {
        assert_eq!(h["ready"], true, "{h}");
        assert_eq!(h["versions"]["kubelet"], version.as_str(), "{h}");
        assert_eq!(
            h["pending_changes"].as_array().map(Vec::len),
            Some(0),
            "{h}"
        );
    }
    assert_eq!(s["etcd"][0]["leader"], true, "{s}");

    // a stopped kubelet on the worker: exit 1, naming it
    tb.ssh(1, "systemctl stop kubelet");
    let status = provision(&["status", "-i", inv_s]);
    assert_eq!(status.code, 1, "{}", status.text());
    assert!(
        status
            .stdout
            .contains(&format!("{worker}: kubelet.service is inactive")),
        "{}",
        status.stdout
    );
    tb.ssh(1, "systemctl start kubelet");

    // a file changed by hand: the host's pending change is shown, and join puts it back
    tb.ssh(
        1,
        "echo '# changed by hand' >> /etc/sysctl.d/99-provision.conf",
    );
    let status = provision(&["status", "-i", inv_s]);
    assert_eq!(status.code, 1, "{}", status.text());
    assert!(
        status
            .stdout
            .contains(&format!("{worker}: 1 change pending"))
            && status.stdout.contains("/etc/sysctl.d/99-provision.conf"),
        "{}",
        status.stdout
    );
    provision_ok(&["join", "-i", inv_s]);
    let status = provision(&["status", "-i", inv_s]);
    assert_eq!(status.code, 0, "{}", status.text());
}
