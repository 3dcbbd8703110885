//! The real-cluster tier, from the operator's chair: `init`'s grouped text output, the admin's
//! kubeconfig merged into a file of other clusters and used by kubectl, a person's certificate
//! that RBAC refuses until it is bound, and `status` on a healthy cluster, with a stopped
//! kubelet and with a changed file, an etcd snapshot checked here by etcdutl, and the backup
//! archive, restored on the same machines and onto another. One control plane and one worker;
//! a third machine takes the control plane's place at the end.

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

/// The namespace `keep` as the test made it: the ConfigMap's value, the Secret's (read back
/// through the API, so decrypted), the Deployment's pods running.
fn assert_kept(kubectl: &dyn Fn(&[&str]) -> (bool, String)) {
    use base64::Engine;
    let get = |kind: &str, name: &str, path: &str| {
        kubectl(&[
            "-n",
            "keep",
            "get",
            kind,
            name,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
    };
    let (ok, colour) = get("configmap", "settings", ".data.colour");
    assert!(ok && colour == "blue", "{colour}");
    let (ok, password) = get("secret", "login", ".data.password");
    let password = base64::engine::general_purpose::STANDARD
        .decode(password.trim())
        .unwrap_or_default();
    assert!(ok && password == b"hunter2", "{password:?}");
    let (ok, said) = kubectl(&[
        "-n",
        "keep",
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=180s",
    ]);
    assert!(ok, "the Deployment's pods do not run: {said}");
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
fn an_operator_reads_grouped_output_merges_kubeconfigs_issues_users_asks_for_status_and_backs_up() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    let tb = Testbed::up_for_kubelet(3);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let version = support::bundle_kube_version(&bundle);
    let spec = format!(
        "{}  etcd:\n    snapshots: {{schedule: hourly, keep: 2}}\n",
        support::bundle_spec(&bundle)
    );
    let inv = tb.inventory_of(&spec, &[], &[(0, "control-plane"), (1, "worker")]);
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
    // --merge without a path: the first file of $KUBECONFIG
    let via_env = tb.dir.path().join("from-env.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["kubeconfig", "-i", inv_s, "--merge"])
        .env("KUBECONFIG", &via_env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, nodes) = kubectl(&upstream, &version, &via_env, &["get", "nodes"]);
    assert!(ok && nodes.contains(cp), "{nodes}");
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
    // etcd's version is shown where etcd is ours: the control plane
    assert!(s["hosts"][0]["versions"]["etcd"].is_string(), "{s}");
    assert!(s["hosts"][1]["versions"].get("etcd").is_none(), "{s}");

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

    // an etcd snapshot: copied here 0600 with its sha256, and etcdutl here reads what the
    // host's etcdutl read there
    let snap = tb.dir.path().join("snap.db");
    let saved = provision_ok(&[
        "etcd",
        "snapshot",
        "save",
        "-i",
        inv_s,
        "-o",
        snap.to_str().unwrap(),
        "--keep-on-host",
        "--output",
        "json",
    ]);
    let saved: serde_json::Value = serde_json::from_str(&saved.stdout).unwrap();
    let bytes = std::fs::read(&snap).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!(saved["sha256"], sha.as_str());
    let sums = std::fs::read_to_string(tb.dir.path().join("snap.db.sha256")).unwrap();
    assert_eq!(sums, format!("{sha}  snap.db\n"));
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let etcdutl = find(&upstream.join("etcd"), "etcdutl").expect("etcdutl in the upstream builds");
    let here = Command::new(etcdutl)
        .args(["snapshot", "status", snap.to_str().unwrap(), "-w", "json"])
        .output()
        .unwrap();
    let here: serde_json::Value = serde_json::from_slice(&here.stdout).unwrap();
    assert_eq!(here["revision"], saved["status"]["revision"]);
    assert_eq!(here["totalKey"], saved["status"]["totalKey"]);
    assert!(here["totalKey"].as_u64().unwrap() > 100, "{here}");
    let listed = provision_ok(&["etcd", "snapshot", "list", "-i", inv_s]);
    assert!(
        listed
            .stdout
            .contains("/var/lib/provision/etcd-snapshots/snap.db")
            && listed
                .stdout
                .contains(&saved["status"]["revision"].to_string()),
        "{}",
        listed.stdout
    );

    // scheduled snapshots: a timer on the control plane; three runs keep the newest two, and
    // the manual one kept above stays
    assert_eq!(
        tb.ssh(0, "systemctl is-active provision-etcd-snapshot.timer")
            .trim(),
        "active"
    );
    for _ in 0..3 {
        tb.ssh(
            0,
            "systemctl start provision-etcd-snapshot.service && sleep 1",
        );
    }
    let listed = provision_ok(&["etcd", "snapshot", "list", "-i", inv_s]);
    let scheduled = listed
        .stdout
        .lines()
        .filter(|l| l.contains("/scheduled-"))
        .count();
    assert_eq!(scheduled, 2, "{}", listed.stdout);
    assert!(listed.stdout.contains("/snap.db"), "{}", listed.stdout);
    assert!(!listed.stdout.contains("unreadable"), "{}", listed.stdout);

    // the backup: the snapshot and the keys, one archive, every entry 0600
    let archive = tb.dir.path().join("backup.secret.tar");
    provision_ok(&["backup", "-i", inv_s, "-o", archive.to_str().unwrap()]);
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut entries = Vec::new();
    let file = std::fs::File::open(&archive).unwrap();
    for e in tar::Archive::new(file).entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().mode().unwrap() & 0o777, 0o600);
        entries.push(e.path().unwrap().display().to_string());
    }
    for want in [
        "backup.json",
        "etcd/snapshot.db",
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/pki/etcd/ca.key",
        "etc/kubernetes/pki/front-proxy-ca.key",
        "etc/kubernetes/pki/sa.key",
        "etc/kubernetes/encryption-config.yaml",
    ] {
        assert!(
            entries.contains(&want.to_string()),
            "{want} not in {entries:?}"
        );
    }
    let beside: Vec<_> = std::fs::read_dir(tb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("backup") && n != "backup.secret.tar")
        .collect();
    assert!(beside.is_empty(), "left beside the archive: {beside:?}");

    // a restore: a namespace with a ConfigMap, a Secret and a Deployment, saved, deleted, and
    // back from the snapshot; the worker stays Ready without re-joining
    let admin_kubectl = |args: &[&str]| kubectl(&upstream, &version, &admin, args);
    for args in [
        vec!["create", "namespace", "keep"],
        vec![
            "-n",
            "keep",
            "create",
            "configmap",
            "settings",
            "--from-literal=colour=blue",
        ],
        vec![
            "-n",
            "keep",
            "create",
            "secret",
            "generic",
            "login",
            "--from-literal=password=hunter2",
        ],
        vec![
            "-n",
            "keep",
            "create",
            "deployment",
            "web",
            "--image=registry.k8s.io/e2e-test-images/busybox:1.35.0",
            "--",
            "sleep",
            "3600",
        ],
        vec![
            "-n",
            "keep",
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=90s",
        ],
    ] {
        let (ok, said) = admin_kubectl(&args);
        assert!(ok, "kubectl {args:?}: {said}");
    }
    let snap = tb.dir.path().join("keep.db");
    let snap_s = snap.to_str().unwrap();
    provision_ok(&["etcd", "snapshot", "save", "-i", inv_s, "-o", snap_s]);
    let (ok, said) = admin_kubectl(&["delete", "namespace", "keep", "--wait", "--timeout=90s"]);
    assert!(ok, "{said}");
    let gone = || !admin_kubectl(&["get", "namespace", "keep"]).0;
    assert!(gone());

    // refusals, each with nothing changed: a truncated file, another cluster's snapshot, and
    // healthy members without --force
    let copy = |name: &str, cut: bool, provenance: &dyn Fn(String) -> String| {
        let to = tb.dir.path().join(name);
        let bytes = std::fs::read(&snap).unwrap();
        std::fs::write(
            &to,
            if cut {
                &bytes[..bytes.len() / 2]
            } else {
                &bytes[..]
            },
        )
        .unwrap();
        let sums = std::fs::read_to_string(tb.dir.path().join("keep.db.sha256")).unwrap();
        std::fs::write(tb.dir.path().join(format!("{name}.sha256")), sums).unwrap();
        let json = std::fs::read_to_string(tb.dir.path().join("keep.db.json")).unwrap();
        std::fs::write(tb.dir.path().join(format!("{name}.json")), provenance(json)).unwrap();
        to.display().to_string()
    };
    let truncated = copy("truncated.db", true, &|j| j);
    let foreign = copy("foreign.db", false, &|j| {
        let mut v: serde_json::Value = serde_json::from_str(&j).unwrap();
        v["ca_sha256"] = "0".repeat(64).into();
        v.to_string()
    });
    for (from, why) in [
        (truncated.as_str(), "does not match its sha256"),
        (foreign.as_str(), "snapshot of another cluster"),
        (snap_s, "etcd is healthy on"),
    ] {
        let force: &[&str] = if from == snap_s { &[] } else { &["--force"] };
        let refused = provision(
            &[
                &[
                    "etcd", "snapshot", "restore", "-i", inv_s, "--from", from, "--yes",
                ],
                force,
            ]
            .concat(),
        );
        assert_eq!(refused.code, 2, "{}", refused.text());
        assert!(
            refused.stderr.contains(why) && refused.stderr.contains("nothing was changed"),
            "{}",
            refused.text()
        );
    }
    let planned = provision_ok(&[
        "etcd",
        "snapshot",
        "restore",
        "-i",
        inv_s,
        "--from",
        snap_s,
        "--dry-run",
    ]);
    assert!(
        planned.stdout.contains("stop etcd on")
            && planned.stdout.contains("member.before-restore-"),
        "{}",
        planned.stdout
    );
    assert!(gone(), "a refusal or a dry run changed the cluster");

    let restored = provision_ok(&[
        "etcd", "snapshot", "restore", "-i", inv_s, "--from", snap_s, "--yes", "--force",
    ]);
    assert!(
        restored.stdout.contains("etcd is back at revision"),
        "{}",
        restored.text()
    );
    assert_kept(&admin_kubectl);
    let (ok, said) = admin_kubectl(&[
        "wait",
        "--for=condition=Ready",
        "node",
        "--all",
        "--timeout=120s",
    ]);
    assert!(ok, "{said}");
    let left = tb.ssh(
        0,
        "ls -A /var/lib/etcd; ls /var/lib/provision/etcd-restore 2>/dev/null; true",
    );
    assert_eq!(left.trim(), "member", "left in the data directory: {left}");

    // a disaster: etcd stopped and its data wiped; the restore needs no --force, and the
    // cluster passes verify again
    tb.ssh(
        0,
        "{ systemctl stop kube-apiserver etcd || { sleep 1; systemctl stop kube-apiserver etcd; }; } && rm -rf /var/lib/etcd/member",
    );
    provision_ok(&[
        "etcd", "snapshot", "restore", "-i", inv_s, "--from", snap_s, "--yes",
    ]);
    provision_ok(&["verify", "-i", inv_s]);

    // a backup of this state, and the admin kubeconfig of this cluster, for after its reset
    let archive2 = tb.dir.path().join("keep.secret.tar");
    let archive2_s = archive2.to_str().unwrap();
    provision_ok(&["backup", "-i", inv_s, "-o", archive2_s]);
    let old_admin = tb.dir.path().join("old-admin.conf");
    std::fs::copy(&admin, &old_admin).unwrap();

    // no member answers: a clear refusal, nothing written
    tb.ssh(
        0,
        "systemctl stop etcd || { sleep 1; systemctl stop etcd; }",
    );
    let refused = provision(&[
        "etcd",
        "snapshot",
        "save",
        "-i",
        inv_s,
        "-o",
        "/nonexistent/x.db",
    ]);
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(
        refused.stderr.contains("no healthy etcd member"),
        "{}",
        refused.text()
    );
    tb.ssh(0, "systemctl start etcd");

    // and the whole cluster goes: nothing of it is left, the snapshot timer included
    provision_ok(&["reset", "-i", inv_s, "--yes"]);
    for i in 0..2 {
        assert_eq!(
            support::leftovers(&tb, i),
            "",
            "left on {}",
            tb.machines[i].name
        );
    }

    // back from the backup on the reset machines: the control plane by `restore`, the worker by
    // `join`; the old admin kubeconfig works (same CA), and what the backup held is there
    let planned = provision_ok(&["restore", "-i", inv_s, "--from", archive2_s, "--dry-run"]);
    assert!(
        planned.stdout.contains(&format!(
            "put the archive's CAs, service-account keys and Secrets key on {cp}"
        )),
        "{}",
        planned.stdout
    );
    assert_eq!(support::leftovers(&tb, 0), "", "a dry run changed {cp}");
    let restored = provision_ok(&["restore", "-i", inv_s, "--from", archive2_s, "--yes"]);
    assert!(
        restored
            .stdout
            .contains("is back at the archive's revision"),
        "{}",
        restored.text()
    );
    provision_ok(&["join", "-i", inv_s]);
    let old_kubectl = |args: &[&str]| kubectl(&upstream, &version, &old_admin, args);
    let (ok, said) = old_kubectl(&[
        "wait",
        "--for=condition=Ready",
        "node",
        "--all",
        "--timeout=120s",
    ]);
    assert!(ok, "{said}");
    assert_kept(&old_kubectl);
    // over a cluster that holds data: refused, nothing changed
    let again = provision(&["restore", "-i", inv_s, "--from", archive2_s, "--yes"]);
    assert_eq!(again.code, 2, "{}", again.text());
    assert!(
        again.stderr.contains("has etcd data already"),
        "{}",
        again.text()
    );

    // the control plane's machine is lost: the archive restored onto a third machine (another
    // name and address) as the control plane, and the worker, never reset, pointed at it by
    // `join`: Ready again, what the archive held is there, the lost machine's Node gone and
    // the `kubernetes` Service listing only the new API server
    tb.power_off(0);
    let (new_cp, new_address) = (&tb.machines[2].name, &tb.machines[2].address);
    let moved = tb.inventory_of(&spec, &[], &[(2, "control-plane"), (1, "worker")]);
    let moved_s = moved.to_str().unwrap();
    let restored = provision_ok(&["restore", "-i", moved_s, "--from", archive2_s, "--yes"]);
    assert!(
        restored.stdout.contains(&format!(
            "deleted Node {cp}: a control plane of the snapshot"
        )),
        "{}",
        restored.text()
    );
    provision_ok(&["join", "-i", moved_s]);
    let server = tb.ssh(1, "grep 'server:' /etc/kubernetes/kubelet.conf");
    assert!(
        server.contains(&format!("https://{new_address}:6443")),
        "{server}"
    );
    let new_admin = tb.dir.path().join("test-admin.conf");
    let new_kubectl = |args: &[&str]| kubectl(&upstream, &version, &new_admin, args);
    let (ok, said) = new_kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("node/{worker}"),
        &format!("node/{new_cp}"),
        "--timeout=120s",
    ]);
    assert!(ok, "{said}");
    let (_, nodes) = new_kubectl(&["get", "nodes", "-o", "name"]);
    let mut listed: Vec<&str> = nodes.split_whitespace().collect();
    listed.sort_unstable();
    let mut expected = [format!("node/{worker}"), format!("node/{new_cp}")];
    expected.sort_unstable();
    assert_eq!(listed, expected, "{nodes}");
    let (ok, endpoints) = new_kubectl(&[
        "-n",
        "default",
        "get",
        "endpointslice",
        "-l",
        "kubernetes.io/service-name=kubernetes",
        "-o",
        "jsonpath={.items[*].endpoints[*].addresses[*]}",
    ]);
    assert!(ok && endpoints.trim() == new_address, "{endpoints}");
    assert_kept(&new_kubectl);
    let (ok, logs) = new_kubectl(&["-n", "keep", "logs", "deployment/web", "--tail=1"]);
    assert!(ok, "kubectl logs through the worker's kubelet: {logs}");
}
