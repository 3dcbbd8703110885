//! The `artifacts` phase on three test machines from a bundle directory assembled out of the
//! Debian packages in the machine image (scripts/testbed-bundle): the files land with the
//! bundle's digests and modes behind symlinks, the binaries run, a second run uploads nothing,
//! and a new version of one component ships that component only.

mod support;
use std::path::Path;
use support::{Testbed, provision};

fn manifest_sha(bundle: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(bundle.join("bundle.yaml")).unwrap();
    let at = text
        .find(&format!("file: '{file}'"))
        .unwrap_or_else(|| panic!("{file} not in the bundle"));
    let rest = &text[at..];
    let sha = rest.split("sha256: '").nth(1).unwrap();
    sha[..64].to_string()
}

fn uploaded(run: &support::Run) -> Vec<(String, u64, usize)> {
    run.hosts_of("artifacts")
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                h["bytes_uploaded"].as_u64().unwrap(),
                h["changes"].as_array().unwrap().len(),
            )
        })
        .collect()
}

/// The control plane through `init phase artifacts`, the workers through `join`.
fn ship(inv: &Path) -> (support::Run, support::Run) {
    let inv = inv.to_str().unwrap();
    let init = provision(&["init", "phase", "artifacts", "-i", inv, "--output", "json"]);
    assert_eq!(init.code, 0, "{}", init.text());
    let join = provision(&["join", "phase", "artifacts", "-i", inv, "--output", "json"]);
    assert_eq!(join.code, 0, "{}", join.text());
    (init, join)
}

#[test]
fn artifacts_land_verified_then_nothing_moves_then_one_version_change_ships_one_component() {
    let tb = Testbed::up(3);
    let bundle = support::testbed_bundle(tb.dir.path(), None);
    let spec = support::bundle_spec(&bundle);
    let inv = tb.inventory(&spec, &[]);

    let (init, join) = ship(&inv);
    let first: Vec<_> = uploaded(&init).into_iter().chain(uploaded(&join)).collect();
    assert_eq!(first.len(), 3, "{first:?}");
    for (host, bytes, changes) in &first {
        assert!(*bytes > 10 << 20, "{host} got only {bytes} bytes");
        assert!(*changes > 20, "{host}: {changes} changes");
    }

    // the control plane: etcd, kubectl and the node components, as the bundle has them
    let etcd = "/opt/provision/etcd/3.4.23/etcd";
    let got = tb.ssh(
        0,
        &format!("sha256sum {etcd} | cut -c1-64; stat -c '%a %U:%G' {etcd}; readlink /usr/local/bin/etcd; stat -c %a /opt/provision/etcd/3.4.23"),
    );
    assert_eq!(
        got,
        format!(
            "{}\n755 root:root\n{etcd}\n755\n",
            manifest_sha(&bundle, "etcd/3.4.23/amd64/etcd")
        )
    );
    let version = tb.ssh(
        0,
        "etcd --version | head -1; readlink /usr/local/bin/kubectl",
    );
    assert!(version.contains("3.4.23"), "{version}");
    let kube = support::bundle_kube_version(&bundle);
    assert!(
        version.contains(&format!("/opt/provision/kubectl/{kube}/kubectl")),
        "{version}"
    );
    // a worker: no control-plane binaries; runtime, CNI plugins and images in place
    let worker = tb.ssh(
        1,
        "ls /opt/provision; readlink /opt/cni/bin/bridge; readlink /usr/local/bin/containerd-shim-runc-v2; stat -c %a /var/lib/provision/images/pause_busybox-1.35.0.tar; runc --version | head -1",
    );
    let lines: Vec<&str> = worker.lines().collect();
    assert!(
        !lines.contains(&"etcd") && !lines.contains(&"kube-apiserver"),
        "{worker}"
    );
    for want in [
        "containerd",
        "cni-plugins",
        "kubelet",
        "/opt/provision/cni-plugins/1.1.1/bridge",
        "/opt/provision/containerd/1.6.20/containerd-shim-runc-v2",
        "644",
        "runc version 1.1.5",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "{want} missing:\n{worker}"
        );
    }
    // the bundle's extra image reaches every node
    tb.ssh(
        2,
        "tar tf /var/lib/provision/images/busybox_1.35.0.tar | grep -qx index.json",
    );
    // a stand-in says what it is
    let stand_in = tb.ssh_output(1, "kubelet --version");
    assert!(String::from_utf8_lossy(&stand_in.stderr).contains("stand-in kubelet"));

    // nothing to do: no bytes, no changes
    let (init2, join2) = ship(&inv);
    let second: Vec<_> = uploaded(&init2)
        .into_iter()
        .chain(uploaded(&join2))
        .collect();
    assert!(
        second.iter().all(|(_, b, c)| *b == 0 && *c == 0),
        "a second run shipped something: {second:?}"
    );

    // a binary altered on a host in place (same size) is found and replaced
    let victim = "/opt/provision/containerd/1.6.20/ctr";
    let original = tb.ssh(1, &format!("sha256sum < {victim}"));
    tb.ssh(
        1,
        &format!("printf X | dd of={victim} bs=1 seek=1000 conv=notrunc status=none"),
    );
    assert_ne!(tb.ssh(1, &format!("sha256sum < {victim}")), original);
    let (_, join3) = ship(&inv);
    let repaired = uploaded(&join3);
    assert_eq!(
        repaired.iter().map(|(_, _, c)| *c).sum::<usize>(),
        1,
        "{}",
        join3.text()
    );
    assert_eq!(tb.ssh(1, &format!("sha256sum < {victim}")), original);

    // a new runc release in the bundle, chosen by the inventory: only runc moves
    let runc_src = bundle.join("runc/1.1.5/amd64/runc");
    let new_dir = bundle.join("runc/1.1.5-p1/amd64");
    std::fs::create_dir_all(&new_dir).unwrap();
    let mut bytes = std::fs::read(&runc_src).unwrap();
    bytes.extend_from_slice(b"\0p1"); // another build: other bytes, same behaviour
    std::fs::write(new_dir.join("runc"), &bytes).unwrap();
    let sha = provision::catalog::digest::Digest::of_bytes(
        provision::catalog::digest::Algo::Sha256,
        &bytes,
    );
    let mut manifest = std::fs::read_to_string(bundle.join("bundle.yaml")).unwrap();
    manifest.push_str(&format!(
        "- component: runc\n  version: '1.1.5-p1'\n  arch: 'amd64'\n  file: 'runc/1.1.5-p1/amd64/runc'\n  sha256: '{}'\n",
        sha.hex
    ));
    std::fs::write(bundle.join("bundle.yaml"), manifest).unwrap();
    let spec = format!("{spec}    versions:\n      runc: 1.1.5-p1\n");
    let inv = tb.inventory(&spec, &[]);
    let (init3, join3) = ship(&inv);
    for run in [&init3, &join3] {
        for h in run.hosts_of("artifacts") {
            assert_eq!(
                h["bytes_uploaded"].as_u64().unwrap(),
                bytes.len() as u64,
                "{h}"
            );
            for c in h["changes"].as_array().unwrap() {
                assert!(
                    c.as_str().unwrap().contains("runc"),
                    "not a runc change: {c}"
                );
            }
        }
    }
    for i in 0..3 {
        assert_eq!(
            tb.ssh(i, "readlink /usr/local/bin/runc").trim(),
            "/opt/provision/runc/1.1.5-p1/runc"
        );
    }
    // the previous version stays for a rollback
    tb.ssh(1, "test -x /opt/provision/runc/1.1.5/runc");
}

#[test]
fn a_dir_bundle_verifies_and_one_flipped_byte_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    support::ensure_images();
    let bundle = support::testbed_bundle(dir.path(), None);
    let ok = provision(&["bundle", "verify", bundle.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{}", ok.text());
    let victim = bundle.join("pause/busybox-1.35.0/amd64/pause.tar");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(&victim, bytes).unwrap();
    let bad = provision(&["bundle", "verify", bundle.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}", bad.text());
    assert!(
        bad.stderr.contains("pause/busybox-1.35.0/amd64/pause.tar"),
        "{}",
        bad.stderr
    );
}
