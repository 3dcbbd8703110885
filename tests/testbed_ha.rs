//! A cluster that serves its own endpoint (`controlPlaneEndpoint: {vip: ...}`): three control
//! planes share a VIP through keepalived, every node reaches the API servers through haproxy on
//! loopback, and the cluster keeps serving when the machine holding the VIP loses its power.
//! Real-cluster tier: needs the upstream builds (PROVISION_UPSTREAM).

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
fn three_control_planes_keep_serving_through_their_vip_when_its_holder_loses_power() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    let tb = Testbed::up_for_kubelet(4);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let spec = format!(
        "{}  controlPlaneEndpoint:\n    vip: {VIP}\n",
        support::bundle_spec(&bundle)
    );
    let inv = tb.inventory_with_control_planes(&spec, &[], 3);
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
    for (i, name) in names.iter().enumerate() {
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
    for n in &names {
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
    let ready = |n: &str| {
        tb.ssh(
            by,
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
}
