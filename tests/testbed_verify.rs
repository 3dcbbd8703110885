//! `provision verify` on a real cluster (one control plane, two workers; the real-cluster tier,
//! PROVISION_UPSTREAM): every row this machine supports passes, and breaking the overlay or
//! kube-proxy on one node fails the rows that cross it, with the cause named.

mod support;
use serde_json::Value;
use support::{Testbed, provision, provision_ok};

/// The rows of a `verify --output json` run, and its exit code.
fn verify(inv: &str) -> (i32, Vec<Value>) {
    let r = provision(&["verify", "-i", inv, "--output", "json"]);
    let v: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{}", r.text()));
    (r.code, v["rows"].as_array().cloned().unwrap_or_default())
}

fn rows<'a>(rows: &'a [Value], check: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["check"] == check).collect()
}

fn failed(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .filter(|r| r["outcome"] == "fail")
        .map(|r| {
            format!(
                "{} {}",
                r["check"].as_str().unwrap(),
                r["subject"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn verify_passes_on_a_working_cluster_and_names_what_breaks() {
    let Some(upstream) = support::upstream_or_skip("verify on a real cluster") else {
        return;
    };
    let tb = Testbed::up_for_kubelet(3);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    let inv = inv.to_str().unwrap();
    let names: Vec<&str> = tb.machines.iter().map(|m| m.name.as_str()).collect();

    // init and join end with the verify phase: one node, then three
    let init = provision_ok(&["init", "-i", inv, "--output", "json"]);
    let notes = init.hosts_of("verify")[0]["notes"].to_string();
    assert!(notes.contains("verify: "), "{notes}");
    assert!(notes.contains("CoreDNS is not deployed"), "{notes}");
    provision_ok(&["join", "-i", inv]);
    // a re-run that changes nothing does not verify again; the phase alone does
    let rerun = provision_ok(&["init", "-i", inv, "--output", "json"]);
    assert_eq!(rerun.changes(), 0, "{}", rerun.text());
    let notes = rerun.hosts_of("verify")[0]["notes"].to_string();
    assert!(notes.contains("not run, nothing changed"), "{notes}");
    let alone = provision_ok(&["init", "phase", "verify", "-i", inv, "--output", "json"]);
    let notes = alone.hosts_of("verify")[0]["notes"].to_string();
    assert!(
        notes.contains("verify: 28 ok, 1 not enforced, 1 skipped"),
        "{notes}"
    );

    let (code, all) = verify(inv);
    assert_eq!(failed(&all), Vec::<String>::new(), "{all:#?}");
    assert_eq!(code, 0);
    for (check, n) in [
        ("api", 1),
        ("node", 3),
        ("control-plane", 1),
        ("leader", 2),
        ("pod", 3),
        ("pod-to-pod", 6),
        ("node-to-pod", 9),
        ("pod-to-service", 3),
    ] {
        let found = rows(&all, check);
        assert_eq!(found.len(), n, "{check}: {found:#?}");
        assert!(
            found.iter().all(|r| r["outcome"] == "pass"),
            "{check}: {found:#?}"
        );
    }
    // the receiver saw the sender's own pod address
    assert!(
        rows(&all, "pod-to-pod")
            .iter()
            .all(|r| r["detail"].as_str().unwrap().contains("no NAT")),
        "{all:#?}"
    );
    // what this machine cannot have is reported as such, with the reason
    let dns = rows(&all, "dns");
    assert_eq!(dns.len(), 1);
    assert_eq!(dns[0]["outcome"], "skipped");
    let policy = rows(&all, "network-policy");
    assert_eq!(policy[0]["outcome"], "not-enforced", "{policy:#?}");
    assert!(policy[0]["detail"].as_str().unwrap().contains("builtin"));
    // the test objects go away
    let gone = tb.ssh(
        0,
        "for i in $(seq 90); do kubectl --kubeconfig=/etc/kubernetes/admin.conf get ns -l provision.io/verify -o name | grep -q . || { echo gone; exit 0; }; sleep 1; done; echo still there",
    );
    assert_eq!(gone.trim(), "gone");

    // the overlay link deleted on the third machine: every pod-to-pod row that crosses it fails
    // and names the link; the rows between the other two still pass
    tb.ssh(2, "ip link del provision-vx");
    let (code, broken) = verify(inv);
    assert_eq!(code, 1);
    let mut expected: Vec<String> = Vec::new();
    for (a, b) in [(0, 2), (1, 2), (2, 0), (2, 1)] {
        expected.push(format!("pod-to-pod {} → {}", names[a], names[b]));
    }
    let pod_failures: Vec<String> = failed(&broken)
        .into_iter()
        .filter(|f| f.starts_with("pod-to-pod"))
        .collect();
    let mut sorted = pod_failures.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "{broken:#?}");
    for r in rows(&broken, "pod-to-pod")
        .iter()
        .filter(|r| r["outcome"] == "fail")
    {
        let cause = r["cause"].as_str().unwrap_or_default();
        assert!(
            cause.contains(&format!("provision-vx is missing on {}", names[2])),
            "{r:#?}"
        );
    }
    // the text table shows the cause under the failed row
    let text = provision(&["verify", "-i", inv]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .contains("likely cause: the VXLAN link provision-vx is missing"),
        "{}",
        text.stdout
    );

    // the cni phase notices the missing link and restores it
    let repair = provision_ok(&["join", "phase", "cni", "-i", inv, "--output", "json"]);
    assert!(repair.changes() >= 1, "{}", repair.text());
    let (code, repaired) = verify(inv);
    assert_eq!(failed(&repaired), Vec::<String>::new());
    assert_eq!(code, 0);

    // kube-proxy stopped on the second machine: its pod cannot reach the new test Service
    tb.ssh(1, "systemctl stop kube-proxy");
    let (code, no_proxy) = verify(inv);
    assert_eq!(code, 1);
    assert_eq!(
        failed(&no_proxy),
        [format!("pod-to-service {} → verify", names[1])],
        "{no_proxy:#?}"
    );
    let row = rows(&no_proxy, "pod-to-service")
        .into_iter()
        .find(|r| r["outcome"] == "fail")
        .unwrap();
    assert!(
        row["cause"]
            .as_str()
            .unwrap()
            .contains(&format!("kube-proxy is not running on {}", names[1])),
        "{row:#?}"
    );
    tb.ssh(1, "systemctl start kube-proxy");

    // Flannel, Calico and Cilium manifests: the test API server accepts every object in a
    // server-side dry run, and nothing is created
    for (cni, daemonset) in [
        ("flannel", "kube-flannel-ds"),
        ("calico", "calico-node"),
        ("cilium", "cilium"),
    ] {
        let inv = tb.inventory(
            &format!("{}  cni:\n    name: {cni}\n", support::bundle_spec(&bundle)),
            &[],
        );
        let inv = inv.to_str().unwrap();
        let r = provision(&[
            "init",
            "phase",
            "addons",
            "--dry-run",
            "-i",
            inv,
            "--output",
            "json",
        ]);
        assert_eq!(r.code, 0, "{cni}: {}", r.text());
        let changes = r.hosts_of("addons")[0]["changes"].to_string();
        assert!(
            changes.contains(&format!("would create DaemonSet {daemonset}")),
            "{cni}: {changes}"
        );
        let ds = tb.ssh(
            0,
            "kubectl --kubeconfig=/etc/kubernetes/admin.conf get daemonsets -A -o name",
        );
        assert!(!ds.contains(daemonset), "{cni}: a dry run created {ds}");
    }
}
