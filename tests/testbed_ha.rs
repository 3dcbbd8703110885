//! A cluster that serves its own endpoint (`controlPlaneEndpoint: {vip: ...}`): three control
//! planes share a VIP through keepalived, every node reaches the API servers through haproxy on
//! loopback, the cluster keeps serving when the machine holding the VIP loses its power, and
//! the inventory's first control plane can leave and be replaced by a fresh machine while the
//! others serve. Real-cluster tier: needs the upstream builds (PROVISION_UPSTREAM).

mod support;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{Testbed, provision, provision_ok};

/// On the test bridge, outside the machines' addresses (10.244.1.10 and up).
const VIP: &str = "10.244.1.250";
const ADMIN: &str = "kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s";

fn etcdctl(command: &str) -> String {
    format!(
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key --command-timeout=5s {command}"
    )
}

/// The control planes (of `among`) that hold the VIP on an interface.
fn holders(tb: &Testbed, among: &[usize]) -> Vec<usize> {
    among
        .iter()
        .copied()
        .filter(|&i| {
            tb.ssh(i, &format!("ip -o addr show | grep -c ' {VIP}/' || true"))
                .trim()
                != "0"
        })
        .collect()
}

fn vip_accepts() -> bool {
    let addr: SocketAddr = format!("{VIP}:6443").parse().expect("the VIP's address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A client on this machine polling `/readyz` through the VIP every 100 ms until stopped;
/// `stop` returns the longest time it saw no answer.
struct ReadyzPoller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Duration>,
}

impl ReadyzPoller {
    fn start() -> ReadyzPoller {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut longest, mut since_ok) = (Duration::ZERO, Instant::now());
            while !flag.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let code = std::process::Command::new("curl")
                    .args([
                        "-sk",
                        "--max-time",
                        "0.5",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                    ])
                    .arg(format!("https://{VIP}:6443/readyz"))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if code == "200" {
                    since_ok = Instant::now();
                } else {
                    longest = longest.max(since_ok.elapsed());
                }
                std::thread::sleep(Duration::from_millis(100).saturating_sub(asked.elapsed()));
            }
            longest
        });
        ReadyzPoller { stop, thread }
    }

    fn stop(self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the poller")
    }
}

/// Polls `check` every second for up to `seconds`; true once it held.
fn within(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

#[test]
fn three_control_planes_keep_serving_through_their_vip_when_one_loses_power_or_is_replaced() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    // four in the cluster; the fifth replaces its first control plane at the end
    let tb = Testbed::up_for_kubelet(5);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let spec = format!(
        "{}  controlPlaneEndpoint:\n    vip: {VIP}\n",
        support::bundle_spec(&bundle)
    );
    let (cp, worker) = ("control-plane", "worker");
    let inv = tb.inventory_of(&spec, &[], &[(0, cp), (1, cp), (2, cp), (3, worker)]);
    let inv_s = inv.to_str().expect("a UTF-8 path");
    let names = tb.names();

    provision_ok(&["init", "-i", inv_s]);
    let join = provision_ok(&["join", "-i", inv_s, "--output", "json"]);
    // every control plane got keepalived, every node haproxy
    assert_eq!(join.hosts_of("vip").len(), 3, "{}", join.text());
    assert_eq!(join.hosts_of("api-proxy").len(), 4, "{}", join.text());
    let again = provision_ok(&["join", "-i", inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // people reach the VIP, every node's agents its loopback proxy
    let server = |i: usize, file: &str| {
        tb.ssh(
            i,
            &format!("sed -n 's/^ *server: //p' /etc/kubernetes/{file}"),
        )
        .trim()
        .to_string()
    };
    for i in 0..3 {
        assert_eq!(server(i, "admin.conf"), format!("https://{VIP}:6443"));
    }
    for (i, name) in names.iter().enumerate().take(4) {
        assert_eq!(
            server(i, "kubelet.conf"),
            "https://127.0.0.1:6444",
            "{name}"
        );
        assert_eq!(tb.ssh(i, "systemctl is-active api-proxy").trim(), "active");
    }
    let admin = std::fs::read_to_string(tb.dir.path().join("test-admin.conf"))
        .expect("the operator's admin kubeconfig");
    assert!(
        admin.contains(&format!("server: https://{VIP}:6443")),
        "{admin}"
    );

    // four nodes Ready, three etcd members, one VIP holder, verify passing
    let nodes = tb.ssh(1, &format!("{ADMIN} get nodes --no-headers"));
    for n in &names[..4] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(n) && l.contains(" Ready ")),
            "{nodes}"
        );
    }
    let members = tb.ssh(0, &etcdctl("member list"));
    assert_eq!(
        members
            .lines()
            .filter(|l| l.contains(", started, "))
            .count(),
        3,
        "{members}"
    );
    let held = holders(&tb, &[0, 1, 2]);
    assert_eq!(held.len(), 1, "the VIP is held by {held:?}");
    let verify = provision(&["verify", "-i", inv_s]);
    assert_eq!(verify.code, 0, "{}", verify.text());

    // the holder loses its power: the VIP answers from another control plane
    let lost = held[0];
    let rest: Vec<usize> = (0..3).filter(|&i| i != lost).collect();
    tb.power_off(lost);
    let cut = Instant::now();
    assert!(
        within(30, || vip_accepts() && holders(&tb, &rest).len() == 1),
        "no control plane took the VIP over within 30 s"
    );
    println!(
        "the VIP answered from {} {:.1} s after {} lost its power",
        names[holders(&tb, &rest)[0]],
        cut.elapsed().as_secs_f64(),
        names[lost]
    );
    let by = rest[0];
    let nodes = tb.ssh(by, &format!("{ADMIN} get nodes --no-headers"));
    assert!(nodes.contains(names[3]), "{nodes}");
    // etcd: two of three healthy
    let health = tb.ssh(
        by,
        &format!("{} 2>&1 || true", etcdctl("endpoint health --cluster")),
    );
    assert_eq!(health.matches(" is healthy").count(), 2, "{health}");
    assert_eq!(health.matches(" is unhealthy").count(), 1, "{health}");

    // a new Deployment is scheduled and runs; once the lost machine's node is no longer Ready,
    // the worker still is
    let image = format!(
        "registry.k8s.io/e2e-test-images/busybox:{}",
        support::bundle_version(&bundle, "busybox")
    );
    tb.ssh(
        by,
        &format!(
            "{ADMIN} create deployment after-loss --image={image} --replicas=2 -- sleep 3600 && \
             {ADMIN} rollout status deployment/after-loss --timeout=120s"
        ),
    );
    // asked on `by` until the first control plane leaves, then on the second (up by then)
    let asker = std::cell::Cell::new(by);
    let ready = |n: &str| {
        tb.ssh(
            asker.get(),
            &format!(
                "{ADMIN} get node {n} -o jsonpath='{{.status.conditions[?(@.type==\"Ready\")].status}}'"
            ),
        )
        .trim()
        .to_string()
    };
    // the controller manager may have to take its lease over first (15 s), then waits out the
    // grace period (50 s) of the lost node
    assert!(
        within(150, || ready(names[lost]) != "True"),
        "{} still Ready",
        names[lost]
    );
    assert_eq!(ready(names[3]), "True", "the worker lost its API");

    // a second control plane may not go while one is down: etcd would lose its quorum
    let refused = provision(&["reset", "-i", inv_s, "--hosts", names[rest[1]], "--yes"]);
    assert_ne!(refused.code, 0, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("etcd would lose its quorum: 3 members, 2 healthy"),
        "{}",
        refused.text()
    );
    assert_eq!(tb.ssh(rest[1], "systemctl is-active etcd").trim(), "active");

    // the machine comes back and rejoins by itself: its member healthy, its node Ready
    tb.power_on(lost);
    assert!(
        within(120, || {
            let h = tb.ssh(
                by,
                &format!("{} 2>&1 || true", etcdctl("endpoint health --cluster")),
            );
            h.matches(" is healthy").count() == 3 && ready(names[lost]) == "True"
        }),
        "{} did not rejoin",
        names[lost]
    );
    assert_eq!(
        holders(&tb, &[0, 1, 2]).len(),
        1,
        "one VIP holder after the return"
    );

    // the inventory's first control plane leaves while the others serve: a client polling
    // through the VIP sees at most a short gap (when it held the VIP, keepalived hands it on)
    let first = names[0];
    asker.set(1);
    let poller = ReadyzPoller::start();
    let reset = provision_ok(&["reset", "-i", inv_s, "--hosts", first, "--yes"]);
    let gap = poller.stop();
    println!("reset of {first}: the VIP went unanswered for at most {gap:?}");
    assert!(
        gap < Duration::from_secs(5),
        "{gap:?} without an answer\n{}",
        reset.text()
    );
    let members = tb.ssh(1, &etcdctl("member list"));
    assert_eq!(members.lines().count(), 2, "{members}");
    assert!(!members.contains(first), "{members}");
    let nodes = tb.ssh(1, &format!("{ADMIN} get nodes --no-headers"));
    assert!(!nodes.contains(&format!("{first} ")), "{nodes}");
    assert_eq!(support::leftovers(&tb, 0), "", "left on {first}");
    // a second reset of the same host changes nothing
    let again = provision_ok(&[
        "reset", "-i", inv_s, "--hosts", first, "--yes", "--output", "json",
    ]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // a fresh machine takes its place as the third control plane, through the inventory that
    // names it instead; every other host keeps its pod CIDR
    let cidr = |i: usize| {
        tb.ssh(
            1,
            &format!(
                "{ADMIN} get node {} -o jsonpath='{{.spec.podCIDR}}'",
                names[i]
            ),
        )
    };
    let before: Vec<String> = (1..4).map(cidr).collect();
    let replaced = tb.inventory_of(&spec, &[], &[(1, cp), (2, cp), (3, worker), (4, cp)]);
    let replaced_s = replaced.to_str().expect("a UTF-8 path");
    provision_ok(&["join", "-i", replaced_s]);
    let after: Vec<String> = (1..4).map(cidr).collect();
    assert_eq!(before, after);
    let members = tb.ssh(4, &etcdctl("member list"));
    assert_eq!(
        members
            .lines()
            .filter(|l| l.contains(", started, "))
            .count(),
        3,
        "{members}"
    );
    assert!(members.contains(&format!(", {}, ", names[4])), "{members}");
    assert_eq!(ready(names[4]), "True");
    assert_eq!(server(4, "admin.conf"), format!("https://{VIP}:6443"));
    assert_eq!(server(4, "kubelet.conf"), "https://127.0.0.1:6444");
    let nodes = tb.ssh(4, &format!("{ADMIN} get nodes --no-headers"));
    assert_eq!(nodes.lines().count(), 4, "{nodes}");
    let verify = provision(&["verify", "-i", replaced_s]);
    assert_eq!(verify.code, 0, "{}", verify.text());
    let again = provision_ok(&["join", "-i", replaced_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // a restore rebuilds every member from one snapshot, the new machine's included: one
    // cluster ID, every member healthy, what the snapshot held back
    let on = |cmd: &str| tb.ssh(1, &format!("{ADMIN} {cmd}"));
    on("create namespace keep");
    on("-n keep create configmap settings --from-literal=colour=blue");
    let snap = tb.dir.path().join("ha.db");
    let snap_s = snap.to_str().expect("a UTF-8 path");
    provision_ok(&["etcd", "snapshot", "save", "-i", replaced_s, "-o", snap_s]);
    on("delete namespace keep --wait --timeout=90s");
    provision_ok(&[
        "etcd", "snapshot", "restore", "-i", replaced_s, "--from", snap_s, "--yes", "--force",
    ]);
    let status: serde_json::Value =
        serde_json::from_str(&tb.ssh(1, &etcdctl("endpoint status --cluster -w json")))
            .expect("etcdctl's JSON");
    let members = status.as_array().expect("one entry per member");
    assert_eq!(members.len(), 3, "{status}");
    let ids: std::collections::BTreeSet<String> = members
        .iter()
        .map(|m| m["Status"]["header"]["cluster_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one cluster ID: {status}");
    let health = tb.ssh(
        1,
        &format!("{} 2>&1 || true", etcdctl("endpoint health --cluster")),
    );
    assert_eq!(health.matches(" is healthy").count(), 3, "{health}");
    assert_eq!(
        on("-n keep get configmap settings -o jsonpath={.data.colour}").trim(),
        "blue"
    );
    assert!(
        within(120, || (0..4).all(|i| ready(names[i + 1]) == "True")),
        "a node is not Ready after the restore"
    );
}
