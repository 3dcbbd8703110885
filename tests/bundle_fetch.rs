//! Fetching through a mirror: a real HTTPS server on loopback with its own CA (the mirror's
//! caFile), Range resume, digest refusal, 404s, digests learnt from published `.sha256` files
//! into the lock file, archives unpacked, and `bundle pack` / `bundle verify`.
//!
//! Upstream release sites cannot be reached here, so the mirror serves stand-in release files:
//! archives and binaries laid out exactly as upstream's, holding small scripts.

mod support;
use provision::bundle::fetch::{FetchError, Fetcher};
use provision::catalog::digest::{Algo, Digest};
use std::path::Path;
use std::process::Command;
use support::https::FileServer;

fn random_bytes(n: usize) -> Vec<u8> {
    // a simple generator is enough: the content only has to be unique and incompressible-ish
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fetcher(server: &FileServer, dir: &Path) -> Fetcher {
    let ca = dir.join("ca.pem");
    server.write_ca(&ca);
    Fetcher::new(Some(&ca)).unwrap()
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_range_and_ends_with_the_right_digest() {
    let server = FileServer::start();
    let data = random_bytes(3 << 20);
    server.put("/files/big", data.clone());
    server.break_next("/files/big");
    let dir = tempfile::tempdir().unwrap();
    let (part, dest) = (dir.path().join("part"), dir.path().join("blob"));
    let want = Digest::of_bytes(Algo::Sha256, &data);
    let url = format!("{}/files/big", server.base_url());
    let size = fetcher(&server, dir.path())
        .download("big 1.0 (amd64)", &url, &part, &dest, &want)
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!part.exists(), "the partial file stays behind");
    let log = server.requests();
    assert_eq!(log[0], ("/files/big".to_string(), None), "{log:?}");
    let resumed: Vec<u64> = log
        .iter()
        .filter_map(|(_, r)| r.as_deref())
        .filter_map(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .collect();
    assert_eq!(resumed.len(), 1, "expected one resumed request: {log:?}");
    assert!(
        resumed[0] > 0 && resumed[0] <= (data.len() / 2) as u64,
        "resumed at {} of {}",
        resumed[0],
        data.len()
    );
}

#[tokio::test]
async fn a_wrong_digest_is_refused_and_leaves_no_file() {
    let server = FileServer::start();
    server.put("/files/x", b"the real content\n".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let (part, dest) = (dir.path().join("part"), dir.path().join("blob"));
    let pinned = Digest::of_bytes(Algo::Sha256, b"what was pinned\n");
    let url = format!("{}/files/x", server.base_url());
    let err = fetcher(&server, dir.path())
        .download("x 1.0 (amd64)", &url, &part, &dest, &pinned)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
    let text = err.to_string();
    let actual = Digest::of_bytes(Algo::Sha256, b"the real content\n");
    for needle in [
        url.as_str(),
        &pinned.to_string(),
        &actual.to_string(),
        "x 1.0 (amd64)",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
    assert!(
        !part.exists() && !dest.exists(),
        "a refused download left a file"
    );
}

#[tokio::test]
async fn a_mirror_with_an_unknown_ca_is_refused() {
    let server = FileServer::start();
    server.put("/f", b"x".to_vec());
    let dir = tempfile::tempdir().unwrap();
    // another server's CA: the TLS handshake must fail, and say so
    let other = FileServer::start();
    let ca = dir.path().join("other-ca.pem");
    other.write_ca(&ca);
    let err = Fetcher::new(Some(&ca))
        .unwrap()
        .text("f", &format!("{}/f", server.base_url()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

// --- the commands, against a mirror of stand-in release files ---

const KUBE: &str = "1.36.2"; // not pinned in the catalog: digests come from published .sha256 files
const KUBE_BINS: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];

fn script(name: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho 'stand-in {name}'\n").into_bytes()
}

fn tar_gz(files: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        t.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

struct Mirror {
    server: FileServer,
    dir: tempfile::TempDir,
    inventory: std::path::PathBuf,
}

/// Serves every file one control plane needs, at upstream's paths under the mirror, and writes
/// an inventory that points at it, plus a lock file pinning the non-kube stand-ins.
fn mirror() -> Mirror {
    let server = FileServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut lock = String::from("apiVersion: provision/v1alpha1\nkind: BundleLock\nartifacts:\n");
    let mut serve = |path: &str, data: Vec<u8>, component: &str, version: &str| {
        if !component.is_empty() {
            lock.push_str(&format!(
                "- component: {component}\n  version: {version}\n  arch: amd64\n  url: https://{}\n  digest: {}\n",
                path.trim_start_matches('/'),
                Digest::of_bytes(Algo::Sha256, &data)
            ));
        }
        server.put(path, data);
    };
    for b in KUBE_BINS {
        let data = script(b);
        let path = format!("/dl.k8s.io/release/v{KUBE}/bin/linux/amd64/{b}");
        serve(
            &format!("{path}.sha256"),
            Digest::of_bytes(Algo::Sha256, &data).hex.into_bytes(),
            "",
            "",
        );
        serve(&path, data, "", "");
    }
    let etcd = tar_gz(&[
        ("etcd-v9.9.1-linux-amd64/etcd", script("etcd"), 0o755),
        ("etcd-v9.9.1-linux-amd64/etcdctl", script("etcdctl"), 0o755),
        (
            "etcd-v9.9.1-linux-amd64/README.md",
            b"docs\n".to_vec(),
            0o644,
        ),
    ]);
    serve(
        "/github.com/etcd-io/etcd/releases/download/v9.9.1/etcd-v9.9.1-linux-amd64.tar.gz",
        etcd,
        "etcd",
        "9.9.1",
    );
    let containerd = tar_gz(&[
        ("bin/containerd", script("containerd"), 0o755),
        ("bin/containerd-shim-runc-v2", script("shim"), 0o755),
        ("bin/ctr", script("ctr"), 0o755),
    ]);
    serve(
        "/github.com/containerd/containerd/releases/download/v9.9.2/containerd-9.9.2-linux-amd64.tar.gz",
        containerd,
        "containerd",
        "9.9.2",
    );
    serve(
        "/github.com/opencontainers/runc/releases/download/v9.9.3/runc.amd64",
        script("runc"),
        "runc",
        "9.9.3",
    );
    let cni = tar_gz(&[
        ("./bridge", script("bridge"), 0o755),
        ("./host-local", script("host-local"), 0o755),
        ("./loopback", script("loopback"), 0o755),
        ("./LICENSE", b"license\n".to_vec(), 0o644),
    ]);
    serve(
        "/github.com/containernetworking/plugins/releases/download/v9.9.4/cni-plugins-linux-amd64-v9.9.4.tgz",
        cni,
        "cni-plugins",
        "9.9.4",
    );
    let crictl = tar_gz(&[("crictl", script("crictl"), 0o755)]);
    serve(
        "/github.com/kubernetes-sigs/cri-tools/releases/download/v9.9.5/crictl-v9.9.5-linux-amd64.tar.gz",
        crictl,
        "crictl",
        "9.9.5",
    );
    // the NetworkPolicy engine: its digest is in the release's checksums file, not the lock
    let kube_router = tar_gz(&[
        ("kube-router", script("kube-router"), 0o755),
        ("LICENSE", b"license\n".to_vec(), 0o644),
        ("README.md", b"docs\n".to_vec(), 0o644),
    ]);
    let release = "/github.com/cloudnativelabs/kube-router/releases/download/v9.9.6";
    serve(
        &format!("{release}/kube-router_9.9.6_checksums.txt"),
        format!(
            "{}  kube-router_9.9.6_linux_arm64.tar.gz\n{}  kube-router_9.9.6_linux_amd64.tar.gz\n",
            Digest::of_bytes(Algo::Sha256, b"another archive").hex,
            Digest::of_bytes(Algo::Sha256, &kube_router).hex
        )
        .into_bytes(),
        "",
        "",
    );
    serve(
        &format!("{release}/kube-router_9.9.6_linux_amd64.tar.gz"),
        kube_router,
        "",
        "",
    );
    std::fs::write(dir.path().join("cluster.lock.yaml"), lock).unwrap();
    server.write_ca(&dir.path().join("mirror-ca.pem"));
    let inventory = dir.path().join("cluster.yaml");
    std::fs::write(
        &inventory,
        format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata:\n  name: mirrored\nspec:\n  kubernetesVersion: {KUBE}\n  networking:\n    podSubnet: 10.88.0.0/16\n  bundle:\n    mirror: {}\n    caFile: mirror-ca.pem\n    versions:\n      etcd: 9.9.1\n      containerd: 9.9.2\n      runc: 9.9.3\n      cni-plugins: 9.9.4\n      crictl: 9.9.5\n      kube-router: 9.9.6\n  hosts:\n    - name: cp1\n      address: 10.244.1.250\n      roles: [control-plane]\n",
            server.base_url()
        ),
    )
    .unwrap();
    Mirror {
        server,
        dir,
        inventory,
    }
}

fn provision_in(cache: &Path, args: &[&str]) -> support::Run {
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .env("PROVISION_CACHE_DIR", cache)
        .output()
        .expect("run provision");
    support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn fetch_learns_published_digests_caches_everything_and_packs_a_verifiable_bundle() {
    let m = mirror();
    let cache = m.dir.path().join("cache");
    let inv = m.inventory.to_str().unwrap();

    let fetch = provision_in(&cache, &["bundle", "fetch", "-i", inv]);
    assert_eq!(fetch.code, 0, "{}", fetch.text());
    assert!(
        fetch.stdout.contains("12 components ready"),
        "{}",
        fetch.text()
    );
    // kube binaries: digests learnt from the published .sha256 and locked
    let lock = std::fs::read_to_string(m.dir.path().join("cluster.lock.yaml")).unwrap();
    for b in KUBE_BINS {
        let d = Digest::of_bytes(Algo::Sha256, &script(b));
        assert!(
            lock.contains(&format!("component: {b}\n  version: {KUBE}"))
                && lock.contains(&d.to_string()),
            "{b} not locked:\n{lock}"
        );
    }
    // kube-router: its line of the release's checksums file, locked likewise
    assert!(
        lock.contains("component: kube-router\n  version: 9.9.6\n  arch: amd64"),
        "kube-router not locked:\n{lock}"
    );
    // archives are unpacked in the cache; hosts get plain files
    let list = provision_in(&cache, &["bundle", "list", "-i", inv, "--output", "json"]);
    assert_eq!(list.code, 0, "{}", list.text());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows.len(), 12, "{}", list.stdout);
    for r in &rows {
        assert_eq!(r["cached"], true, "{r}");
        // pinned by the lock file: given for the stand-ins, learnt for the kube binaries
        assert_eq!(r["verified_by"], "locked", "{r}");
        assert!(
            r["source"]
                .as_str()
                .unwrap()
                .starts_with(&m.server.base_url()),
            "{r}"
        );
    }

    // a second fetch downloads nothing
    let before = m.server.requests().len();
    let again = provision_in(&cache, &["bundle", "fetch", "-i", inv]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(
        again.stdout.contains("(0 B downloaded now)"),
        "{}",
        again.stdout
    );
    assert_eq!(m.server.requests().len(), before, "the cache was not used");

    // pack a directory, verify it, break it
    let packed = m.dir.path().join("packed");
    let pack = provision_in(
        &cache,
        &["bundle", "pack", "-i", inv, "-o", packed.to_str().unwrap()],
    );
    assert_eq!(pack.code, 0, "{}", pack.text());
    let manifest = std::fs::read_to_string(packed.join("bundle.yaml")).unwrap();
    assert!(
        manifest.contains("file: etcd/9.9.1/amd64/etcdctl"),
        "{manifest}"
    );
    assert!(
        manifest.contains("file: cni-plugins/9.9.4/amd64/bridge"),
        "{manifest}"
    );
    assert!(
        !manifest.contains("LICENSE"),
        "a non-executable became a plugin:\n{manifest}"
    );
    assert!(!manifest.contains("README"), "{manifest}");
    let ok = provision_in(&cache, &["bundle", "verify", packed.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{}", ok.text());
    assert!(ok.stdout.contains("all 17 files match"), "{}", ok.stdout);
    assert!(
        manifest.contains("file: kube-router/9.9.6/amd64/kube-router"),
        "{manifest}"
    );

    let victim = packed.join("etcd/9.9.1/amd64/etcd");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let bad = provision_in(&cache, &["bundle", "verify", packed.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}", bad.text());
    assert!(
        bad.stderr.contains("etcd/9.9.1/amd64/etcd"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        bad.stderr.lines().count(),
        1,
        "only one file is wrong: {}",
        bad.stderr
    );
    // the cache is untouched by editing the packed bundle
    let again = provision_in(
        &cache,
        &[
            "bundle",
            "pack",
            "-i",
            inv,
            "-o",
            m.dir.path().join("b.tar").to_str().unwrap(),
        ],
    );
    assert_eq!(again.code, 0, "{}", again.text());
    let listing = Command::new("tar")
        .arg("tf")
        .arg(m.dir.path().join("b.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("bundle.yaml")
            && listing.contains("kube-apiserver/1.36.2/amd64/kube-apiserver"),
        "{listing}"
    );
}

#[test]
fn a_404_names_the_component_and_the_url() {
    let m = mirror();
    let cache = m.dir.path().join("cache");
    // a Kubernetes version the mirror does not hold
    let inv = m.inventory.to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        &format!("kubernetesVersion: {KUBE}"),
        "kubernetesVersion: 1.36.3",
    );
    std::fs::write(&inv, text).unwrap();
    let run = provision_in(&cache, &["bundle", "fetch", "-i", &inv]);
    assert_eq!(run.code, 1, "{}", run.text());
    let url = format!(
        "{}/dl.k8s.io/release/v1.36.3/bin/linux/amd64/kube-apiserver.sha256",
        m.server.base_url()
    );
    for needle in ["kube-apiserver 1.36.3 (amd64)", url.as_str(), "404"] {
        assert!(
            run.stderr.contains(needle),
            "{needle} missing from: {}",
            run.stderr
        );
    }
    // one try: a 404 is not retried
    let tries = m
        .server
        .requests()
        .iter()
        .filter(|(p, _)| url.ends_with(p.as_str()))
        .count();
    assert_eq!(tries, 1);
}

#[test]
fn list_covers_every_host_architecture_with_upstream_urls_and_pins() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("mixed.yaml");
    std::fs::write(
        &inv,
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata:\n  name: mixed\nspec:\n  kubernetesVersion: 1.35.8\n  runtime:\n    runtimeClasses: [gvisor]\n  hosts:\n    - name: cp1\n      address: 192.168.50.10\n      roles: [control-plane]\n    - name: pi1\n      address: 192.168.50.20\n      roles: [worker]\n      arch: arm64\n",
    )
    .unwrap();
    let run = provision_in(
        &dir.path().join("cache"),
        &[
            "bundle",
            "list",
            "-i",
            inv.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.text());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let row = |c: &str, arch: &str| {
        rows.iter()
            .find(|r| r["component"] == c && r["arch"] == arch)
            .unwrap_or_else(|| panic!("no {c} for {arch} in {}", run.stdout))
    };
    let kubelet = row("kubelet", "arm64");
    assert_eq!(
        kubelet["source"],
        "https://dl.k8s.io/release/v1.35.8/bin/linux/arm64/kubelet"
    );
    assert_eq!(kubelet["verified_by"], "pinned");
    assert_eq!(
        kubelet["digest"],
        "sha256:7744f84c49df6dff7d0a0471f9acef31568c02459659de83aa279cf3a04b1714"
    );
    let runsc = row("gvisor-runsc", "arm64");
    assert!(
        runsc["source"]
            .as_str()
            .unwrap()
            .ends_with("/aarch64/runsc"),
        "{runsc}"
    );
    assert!(
        runsc["digest"].as_str().unwrap().starts_with("sha512:"),
        "{runsc}"
    );
    // the control plane's components only for the control plane's architecture
    row("etcd", "amd64");
    assert!(
        !rows
            .iter()
            .any(|r| r["component"] == "etcd" && r["arch"] == "arm64")
    );
    assert_eq!(row("kube-apiserver", "amd64")["verified_by"], "published");
    assert_eq!(row("etcd", "amd64")["version"], "3.6.14");
}
