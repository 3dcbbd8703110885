//! Test machines for integration tests: systemd-nspawn containers booted by `scripts/testbed`
//! (real systemd, real sshd), reached over SSH exactly as users' hosts are.
//!
//! Each test takes its own machine indexes (so tests in one binary can run in parallel), gets a
//! known_hosts file of its own, and tears its machines down when dropped. Machines left behind by
//! a crashed run are removed when the next run starts.

#![allow(dead_code)]

pub mod https;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const PREFIX: &str = "pt";
/// Test machines use indexes from here on; the demo uses 1-3.
const FIRST_INDEX: usize = 20;

/// The test machines share the host's disk, whose use is not theirs: the kubelet's default
/// thresholds (15% free for images) would evict every pod on a host filled by other work.
pub const TESTBED_EVICTION: &str =
    "  kubelet:\n    evictionHard: {imagefs.available: 2Gi, nodefs.available: 1Gi}\n";
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(FIRST_INDEX);
static SETUP: Once = Once::new();

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed")
}

pub fn testbed_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("TESTBED_DIR").unwrap_or_else(|_| "/var/tmp/provision-testbed".into()),
    )
}

fn sh(args: &[&str]) -> Output {
    sh_env(args, &[])
}

fn sh_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(script())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/testbed: {e}"))
}

fn must(args: &[&str]) {
    must_env(args, &[])
}

fn must_env(args: &[&str], env: &[(&str, &str)]) {
    let out = sh_env(args, env);
    assert!(
        out.status.success(),
        "scripts/testbed {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Images once per process; machines of an earlier, crashed run removed.
fn setup() {
    SETUP.call_once(|| {
        assert!(
            unsafe_is_root(),
            "the test bed needs root (systemd-nspawn, bridges, mounts): run the tests as root, as .ci/run does"
        );
        must(&["images"]);
        let machines = testbed_dir().join("machines");
        if let Ok(entries) = std::fs::read_dir(&machines) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(PREFIX) && e.path().is_dir() {
                    sh(&["down", &name]);
                }
            }
        }
    });
}

/// The machine images exist (for tests that read them without booting machines).
pub fn ensure_images() {
    setup();
}

fn unsafe_is_root() -> bool {
    // no libc dependency for one call: ask id(1)
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub struct Machine {
    pub name: String,
    pub index: usize,
    pub address: String,
}

/// N booted machines, torn down on drop.
pub struct Testbed {
    pub machines: Vec<Machine>,
    pub dir: tempfile::TempDir,
}

impl Testbed {
    pub fn up(n: usize) -> Testbed {
        Testbed::boot(n, &[])
    }

    /// Machines that can run a kubelet (scripts/testbed's TESTBED_KUBELET).
    pub fn up_for_kubelet(n: usize) -> Testbed {
        Testbed::boot(n, &[("TESTBED_KUBELET", "1")])
    }

    fn boot(n: usize, env: &[(&str, &str)]) -> Testbed {
        setup();
        let first = NEXT_INDEX.fetch_add(n, Ordering::SeqCst);
        let machines: Vec<Machine> = (first..first + n)
            .map(|i| Machine {
                name: format!("{PREFIX}{i}"),
                index: i,
                address: format!("10.244.1.{}", 10 + i),
            })
            .collect();
        let tb = Testbed {
            machines,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        // boot in parallel: each `up` returns once its container is starting
        std::thread::scope(|s| {
            for m in &tb.machines {
                s.spawn(|| must_env(&["up", &m.name, &m.index.to_string()], env));
            }
        });
        for m in &tb.machines {
            must(&["wait", &m.index.to_string(), "90"]);
        }
        tb.write_known_hosts();
        tb
    }

    pub fn key(&self) -> PathBuf {
        testbed_dir().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// This test's known_hosts: the entries of its machines only.
    pub fn write_known_hosts(&self) {
        let all =
            std::fs::read_to_string(testbed_dir().join("machines/known_hosts")).unwrap_or_default();
        let mine: Vec<&str> = all
            .lines()
            .filter(|l| {
                self.machines
                    .iter()
                    .any(|m| l.starts_with(&format!("{} ", m.address)))
            })
            .collect();
        assert_eq!(
            mine.len(),
            self.machines.len(),
            "known_hosts lacks a machine:\n{all}"
        );
        std::fs::write(self.known_hosts(), mine.join("\n") + "\n").unwrap();
    }

    /// An inventory for these machines: the first is the control plane, the others workers.
    pub fn inventory(&self, extra_spec: &str, host_extra: &[&str]) -> PathBuf {
        self.inventory_with_control_planes(extra_spec, host_extra, 1)
    }

    /// An inventory whose first `control_planes` machines are control planes.
    pub fn inventory_with_control_planes(
        &self,
        extra_spec: &str,
        host_extra: &[&str],
        control_planes: usize,
    ) -> PathBuf {
        let roles: Vec<(usize, &str)> = (0..self.machines.len())
            .map(|i| {
                let role = if i < control_planes {
                    "control-plane"
                } else {
                    "worker"
                };
                (i, role)
            })
            .collect();
        self.inventory_of(extra_spec, host_extra, &roles)
    }

    /// An inventory of the machines `hosts` names (index, role), in that order. Its kubelets
    /// evict pods only when the disk is nearly full ([`TESTBED_EVICTION`]).
    pub fn inventory_of(
        &self,
        extra_spec: &str,
        host_extra: &[&str],
        hosts_and_roles: &[(usize, &str)],
    ) -> PathBuf {
        let mut hosts = String::new();
        for &(i, role) in hosts_and_roles {
            let m = &self.machines[i];
            hosts.push_str(&format!(
                "    - name: {}\n      address: {}\n      roles: [{role}]\n{}",
                m.name,
                m.address,
                host_extra.get(i).copied().unwrap_or("")
            ));
        }
        let text = format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata:\n  name: test\nspec:\n  networking:\n    podSubnet: 10.88.0.0/16\n{TESTBED_EVICTION}  ssh:\n    identityFile: {}\n    knownHostsFile: {}\n{extra_spec}  hosts:\n{hosts}",
            self.key().display(),
            self.known_hosts().display()
        );
        let path = self.dir.path().join("inventory.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The test bed's bundle built from the upstream builds at `upstream`, and an inventory
    /// of these machines that installs it: the inventory's path.
    pub fn bundle_inventory(&self, upstream: &Path) -> String {
        testbed_bundle(self.dir.path(), Some(upstream));
        let inv = self.inventory(&bundle_spec(&self.bundle()), &[]);
        inv.to_str().expect("a UTF-8 temporary path").to_string()
    }

    /// Where `bundle_inventory` put the bundle.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// Cuts machine `i`'s power: its processes killed at once, its disk kept.
    pub fn power_off(&self, i: usize) {
        must(&["poweroff", &self.machines[i].name]);
    }

    /// Boots machine `i` again from its disk; returns once sshd answers.
    pub fn power_on(&self, i: usize) {
        must_env(
            &["start", &self.machines[i].name],
            &[("TESTBED_KUBELET", "1")],
        );
        must(&["wait", &self.machines[i].index.to_string(), "90"]);
    }

    pub fn names(&self) -> Vec<&str> {
        self.machines.iter().map(|m| m.name.as_str()).collect()
    }

    /// Runs a command on machine `i` as root with the system's ssh client (independent of
    /// provision's own transport), returning stdout; panics on failure.
    pub fn ssh(&self, i: usize, cmd: &str) -> String {
        let out = self.ssh_output(i, cmd);
        assert!(
            out.status.success(),
            "ssh {} `{cmd}` failed: {}",
            self.machines[i].name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ssh_output(&self, i: usize, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-i")
            .arg(self.key())
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                testbed_dir().join("machines/known_hosts").display()
            ))
            .arg(format!("root@{}", self.machines[i].address))
            .arg(cmd)
            .output()
            .expect("run ssh")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for m in &self.machines {
            sh(&["down", &m.name]);
        }
    }
}

/// For tests of the phases before the bundle: skip preflight and everything from artifacts on.
pub const SKIP_PREFLIGHT_AND_CLUSTER: &str = "preflight,artifacts,runtime,cni,etcd,control-plane,bootstrap,csr-approver,kubelet,kube-proxy,network-policy,addons,verify";

/// The cache of scripts/build-upstream for the real-cluster tests, or None (the caller says
/// it skipped).
pub fn upstream() -> Option<PathBuf> {
    std::env::var_os("PROVISION_UPSTREAM")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.join("kubernetes").is_dir())
}

/// The upstream builds, or None after saying the real-cluster test `what` was skipped.
pub fn upstream_or_skip(what: &str) -> Option<PathBuf> {
    let up = upstream();
    if up.is_none() {
        eprintln!(
            "SKIPPED: {what}: PROVISION_UPSTREAM does not name the cache of scripts/build-upstream \
             (build it with scripts/build-upstream, then export PROVISION_UPSTREAM=$(scripts/build-upstream --path))"
        );
    }
    up
}

/// For upgrade tests: `n` machines and the bundles of Kubernetes `old` and `new` (both built by
/// `scripts/build-upstream all`), or None, said, when either is not built.
pub fn two_minors_or_skip(
    what: &str,
    n: usize,
    old: &str,
    new: &str,
) -> Option<(Testbed, PathBuf, PathBuf)> {
    let upstream = upstream_or_skip(what)?;
    if !upstream.join("kubernetes").join(old).is_dir() {
        eprintln!("SKIPPED: {what}: Kubernetes {old} is not built (scripts/build-upstream all)");
        return None;
    }
    let tb = Testbed::up_for_kubelet(n);
    let old = testbed_bundle_of(tb.dir.path(), "bundle-old", &upstream, old);
    let new = testbed_bundle_of(tb.dir.path(), "bundle-new", &upstream, new);
    Some((tb, old, new))
}

/// The test bed's bundle directory (scripts/testbed-bundle) under `dir`: the upstream builds
/// at `upstream`, or stand-ins for the Kubernetes binaries (fast to ship) without them.
pub fn testbed_bundle(dir: &Path, upstream: Option<&Path>) -> PathBuf {
    let out = dir.join("bundle");
    let mut cmd =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed-bundle"));
    cmd.arg(&out).env_remove("PROVISION_UPSTREAM");
    if let Some(up) = upstream {
        cmd.arg("--upstream").arg(up);
    }
    let run = cmd.output().expect("run scripts/testbed-bundle");
    assert!(
        run.status.success(),
        "scripts/testbed-bundle: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// The test bed's bundle directory `name` under `dir`, of Kubernetes `version` from the
/// upstream builds at `upstream`.
pub fn testbed_bundle_of(dir: &Path, name: &str, upstream: &Path, version: &str) -> PathBuf {
    testbed_bundle_of_versions(dir, name, upstream, &[version])
}

/// The test bed's bundle directory `name` under `dir`, with every Kubernetes version of
/// `versions` from the upstream builds at `upstream`.
pub fn testbed_bundle_of_versions(
    dir: &Path,
    name: &str,
    upstream: &Path,
    versions: &[&str],
) -> PathBuf {
    let out = dir.join(name);
    let run = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed-bundle"))
        .arg(&out)
        .arg("--upstream")
        .arg(upstream)
        .args(versions.iter().flat_map(|v| ["--kubernetes", v]))
        .env_remove("PROVISION_UPSTREAM")
        .output()
        .expect("run scripts/testbed-bundle");
    assert!(
        run.status.success(),
        "scripts/testbed-bundle: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// The Kubernetes version of the test bed's bundle at `bundle` (its kubelet's).
pub fn bundle_kube_version(bundle: &Path) -> String {
    bundle_version(bundle, "kubelet")
}

/// The version of `component` in the bundle directory at `bundle`.
pub fn bundle_version(bundle: &Path, component: &str) -> String {
    let manifest = std::fs::read_to_string(bundle.join("bundle.yaml")).expect("bundle.yaml");
    let mut lines = manifest.lines();
    while let Some(l) = lines.next() {
        if l == format!("- component: {component}") {
            let v = lines.next().expect("version line");
            return v
                .trim_start_matches("  version: ")
                .trim_matches('\'')
                .to_string();
        }
    }
    panic!("no {component} in {}/bundle.yaml", bundle.display())
}

/// The inventory spec lines for the test bed's bundle directory at `bundle` and its Kubernetes
/// version (for `Testbed::inventory`).
pub fn bundle_spec(bundle: &Path) -> String {
    format!(
        "  kubernetesVersion: {}\n  bundle:\n    dir: {}\n",
        bundle_kube_version(bundle),
        bundle.display()
    )
}

/// The rows of a `provision verify --output json` run against `inv`, and its exit code.
pub fn verify_rows(inv: &str) -> (i32, Vec<serde_json::Value>) {
    let r = provision(&["verify", "-i", inv, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{}", r.text()));
    (r.code, v["rows"].as_array().cloned().unwrap_or_default())
}

/// Runs the provision binary and fails the test unless it exits 0.
pub fn provision_ok(args: &[&str]) -> Run {
    let r = provision(args);
    assert_eq!(r.code, 0, "provision {}:\n{}", args.join(" "), r.text());
    r
}

/// Runs the provision binary.
pub fn provision(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .output()
        .expect("run provision");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// JSON events (`--output json`) of this run.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The changes the run reported, summed over hosts and phases.
    pub fn changes(&self) -> usize {
        self.events()
            .iter()
            .find(|e| e["event"] == "summary")
            .and_then(|e| e["result"]["changes"].as_u64())
            .unwrap_or_else(|| panic!("no summary event in:\n{}", self.text())) as usize
    }

    /// The host results of one phase.
    pub fn hosts_of(&self, phase: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "host" && e["phase"] == phase)
            .map(|e| e["result"].clone())
            .collect()
    }
}

/// What provision left on machine `i` (units, files, links, processes, rules, mounts): one
/// line per thing found, empty after a reset. An empty mount point counts as gone (the test
/// machines' containerd store is one, as an operator's own disk would be).
pub fn leftovers(tb: &Testbed, i: usize) -> String {
    tb.ssh(
        i,
        &format!("for u in containerd etcd provision-pod-routes kubelet kube-proxy kube-apiserver kube-router api-vip api-proxy; do \
           systemctl is-active -q $u && echo \"unit $u active\"; \
           systemctl is-enabled -q $u 2>/dev/null && echo \"unit $u enabled\"; \
           [ -e /etc/systemd/system/$u.service ] && echo \"unit file $u\"; done; \
         systemctl is-active -q provision-etcd-snapshot.timer && echo 'unit etcd snapshot timer active'; \
         for p in /etc/systemd/system/provision-etcd-snapshot.timer /etc/systemd/system/provision-etcd-snapshot.service \
                  /etc/kubernetes /var/lib/kubelet /var/lib/etcd /opt/provision /var/lib/provision /var/lib/containerd \
                  /etc/containerd /etc/crictl.yaml /etc/cni/net.d/10-provision.conflist /var/lib/cni \
                  /usr/local/lib/provision /etc/sysctl.d/99-provision.conf /etc/modules-load.d/provision.conf; do \
           [ -e $p ] && ! {{ mountpoint -q $p && [ -z \"$(ls -A $p)\" ]; }} && echo \"path $p\"; done; \
         find /usr/local/bin /opt/cni/bin /opt -maxdepth 1 -type l -lname '/opt/provision/*' 2>/dev/null | sed 's/^/link /'; \
         for d in /proc/[0-9]*; do case \"$(readlink $d/exe 2>/dev/null)\" in /opt/provision/*) echo \"process $(readlink $d/exe)\";; esac; done; \
         for l in provision-vx cni0; do ip link show $l >/dev/null 2>&1 && echo \"link $l\"; done; \
         iptables-save | grep -E 'provision-|KUBE-|CNI-' | sed 's/^/rule /'; \
         nft list tables 2>/dev/null | grep -E ' kube-proxy$' | sed 's/^/nft /'; \
         ipset list -n 2>/dev/null | grep -E '^(KUBE-|inet6:KUBE-)' | sed 's/^/ipset /'; \
         systemctl is-active -q kubepods.slice && echo 'pods running'; \
         ls /run/netns/cni-* 2>/dev/null | sed 's/^/netns /'; \
         ip rule show pref {} | sed 's/^/ip rule /'; \
         findmnt -rn -o TARGET | grep -E '^(/var/lib/kubelet|/run/containerd|/var/lib/containerd)/|^/run/netns/cni-' | sed 's/^/mount /'; \
         true",
            provision::cni::policy_engine::UNTRANSLATED_SERVICE_RULE
        ),
    )
}
