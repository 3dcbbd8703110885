//! `provision verify` on a real cluster (one control plane, two workers; the real-cluster tier,
//! PROVISION_UPSTREAM): every row passes, and breaking the overlay or kube-proxy on one node
//! fails the rows that cross it, with the cause named; a pod given another network than the
//! cluster's fails its own row.

mod support;
use serde_json::Value;
use support::{Testbed, provision, provision_ok};

fn rows<'a>(rows: &'a [Value], check: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["check"] == check).collect()
}

/// The first failed row of `check`; the whole report when there is none.
fn failed_row<'a>(all: &'a [Value], check: &str) -> &'a Value {
    rows(all, check)
        .into_iter()
        .find(|r| r["outcome"] == "fail")
        .unwrap_or_else(|| panic!("no failed {check} row: {all:#?}"))
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
    let inv = &tb.bundle_inventory(&upstream);
    let names = tb.names();

    // init and join end with the verify phase: one node, then three
    let init = provision_ok(&["init", "-i", inv, "--output", "json"]);
    let notes = init.hosts_of("verify")[0]["notes"].to_string();
    // one node: its pod reaches the Service, and CoreDNS (deployed by the same run) answers
    assert!(notes.contains("verify: 11 ok, 2 skipped"), "{notes}");
    provision_ok(&["join", "-i", inv]);
    // a re-run that changes nothing does not verify again; the phase alone does
    let rerun = provision_ok(&["init", "-i", inv, "--output", "json"]);
    assert_eq!(rerun.changes(), 0, "{}", rerun.text());
    let notes = rerun.hosts_of("verify")[0]["notes"].to_string();
    assert!(notes.contains("not run, nothing changed"), "{notes}");
    let alone = provision_ok(&["init", "phase", "verify", "-i", inv, "--output", "json"]);
    let notes = alone.hosts_of("verify")[0]["notes"].to_string();
    assert!(notes.contains("verify: 60 ok"), "{notes}");

    let (code, all) = support::verify_rows(inv);
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
        // from every pod: the Service's full name, kubernetes.default, the short name
        ("dns", 9),
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
    assert!(
        rows(&all, "dns").iter().any(|r| r["subject"]
            .as_str()
            .unwrap()
            .ends_with("kubernetes.default.svc.cluster.local")
            && r["detail"] == "resolves to 10.96.0.1"),
        "{all:#?}"
    );
    // NetworkPolicy is enforced by the built-in network's engine: the matrix's rows all pass
    // (tests/testbed_policy.rs goes through them)
    let policy = rows(&all, "network-policy");
    assert_eq!(policy.len(), 23, "{policy:#?}");
    assert!(policy.iter().all(|r| r["outcome"] == "pass"), "{policy:#?}");
    // the test objects go away
    let gone = tb.ssh(
        0,
        "for i in $(seq 90); do kubectl --kubeconfig=/etc/kubernetes/admin.conf get ns -l provision.io/verify -o name | grep -q . || { echo gone; exit 0; }; sleep 1; done; echo still there",
    );
    assert_eq!(gone.trim(), "gone");

    // the overlay link deleted on the third machine: every pod-to-pod row that crosses it fails
    // and names the link; the rows between the other two still pass
    tb.ssh(2, "ip link del provision-vx");
    let (code, broken) = support::verify_rows(inv);
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
    let (code, repaired) = support::verify_rows(inv);
    assert_eq!(failed(&repaired), Vec::<String>::new());
    assert_eq!(code, 0);

    // kube-proxy stopped on the second machine: its pod cannot reach the new test Service
    tb.ssh(1, "systemctl stop kube-proxy");
    let (code, no_proxy) = support::verify_rows(inv);
    assert_eq!(code, 1);
    assert_eq!(
        failed(&no_proxy),
        [format!("pod-to-service {} → verify", names[1])],
        "{no_proxy:#?}"
    );
    let row = failed_row(&no_proxy, "pod-to-service");
    assert!(
        row["cause"]
            .as_str()
            .unwrap()
            .contains(&format!("kube-proxy is not running on {}", names[1])),
        "{row:#?}"
    );
    tb.ssh(1, "systemctl start kube-proxy");

    // CoreDNS scaled to 0: the DNS row fails at once, naming CoreDNS; nothing else fails
    let k = "kubectl --kubeconfig=/etc/kubernetes/admin.conf -n kube-system";
    tb.ssh(0, &format!("{k} scale deployment coredns --replicas=0"));
    let (code, no_dns) = support::verify_rows(inv);
    assert_eq!(code, 1);
    let dns_failures: Vec<String> = failed(&no_dns);
    assert_eq!(dns_failures.len(), 1, "{no_dns:#?}");
    assert!(dns_failures[0].starts_with("dns "), "{no_dns:#?}");
    let row = rows(&no_dns, "dns").into_iter().next().unwrap();
    assert!(
        row["cause"]
            .as_str()
            .unwrap()
            .contains("CoreDNS has no pods"),
        "{row:#?}"
    );
    tb.ssh(0, &format!("{k} scale deployment coredns --replicas=2"));
    let (code, dns_back) = support::verify_rows(inv);
    assert_eq!(failed(&dns_back), Vec::<String>::new(), "{dns_back:#?}");
    assert_eq!(code, 0);

    // containerd stopped on the third machine: its pod row fails without waiting for a pod,
    // naming the unit and the command that repairs it
    tb.ssh(2, "systemctl stop containerd");
    let (code, no_runtime) = support::verify_rows(inv);
    assert_eq!(code, 1);
    let row = failed_row(&no_runtime, "pod");
    assert_eq!(row["subject"], names[2]);
    let cause = row["cause"].as_str().unwrap();
    assert!(
        cause.contains(&format!("containerd is inactive on {}", names[2]))
            && cause.contains(&format!("provision join --hosts {}", names[2])),
        "{row:#?}"
    );
    // join repairs it; the run after that changes nothing (no image imported again)
    provision_ok(&["join", "--hosts", names[2], "-i", inv]);
    let again = provision_ok(&["join", "-i", inv, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    let (code, repaired) = support::verify_rows(inv);
    assert_eq!(failed(&repaired), Vec::<String>::new(), "{repaired:#?}");
    assert_eq!(code, 0);

    // another network's configuration on the third machine, first by name (left by another
    // tool once the cluster ran): its test pod runs, but outside the node's pod range, and
    // the row says where to look instead of failing its traffic
    let other = "/etc/cni/net.d/05-other.conflist";
    tb.ssh(
        2,
        &format!(
            "echo '{{\"cniVersion\":\"1.0.0\",\"name\":\"other\",\"plugins\":[{{\"type\":\"bridge\",\"bridge\":\"other0\",\"ipam\":{{\"type\":\"host-local\",\"ranges\":[[{{\"subnet\":\"10.99.0.0/24\"}}]]}}}}]}}' > {other}"
        ),
    );
    let (code, elsewhere) = support::verify_rows(inv);
    assert_eq!(code, 1);
    let row = failed_row(&elsewhere, "pod");
    assert_eq!(row["subject"], names[2]);
    let detail = row["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("runs at 10.99.0.") && detail.contains("outside"),
        "{row:#?}"
    );
    assert!(
        row["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("/etc/cni/net.d"),
        "{row:#?}"
    );
    // only that row fails: the pod's traffic is not tried
    assert_eq!(failed(&elsewhere), vec![format!("pod {}", names[2])]);
    tb.ssh(2, &format!("rm {other} && ip link del other0"));
    let (code, back) = support::verify_rows(inv);
    assert_eq!(failed(&back), Vec::<String>::new(), "{back:#?}");
    assert_eq!(code, 0);

    // the API server restarted, as an upgrade or a certificate renewal does: it stops by
    // itself, ending its watches (not killed at the test machines' stop timeout, as when it
    // held them for its 60 s request timeout); the kubelets, CoreDNS and the policy engine see
    // new objects only once their watches list again; verify right after the restart waits
    // for them and passes
    let stops =
        "journalctl -u kube-apiserver --no-pager | grep -c \"stop-sigterm' timed out\" || true";
    let killed_before = tb.ssh(0, stops);
    // `systemctl restart` returns once it serves (what the controller manager and the
    // scheduler, ordered after it, start on)
    let restart = tb.ssh_output(
        0,
        "systemctl restart kube-apiserver && kubectl --kubeconfig=/etc/kubernetes/admin.conf get --raw /readyz",
    );
    assert_eq!(
        String::from_utf8_lossy(&restart.stdout),
        "ok",
        "the API server was not ready when its restart returned: {}",
        String::from_utf8_lossy(&restart.stderr)
    );
    assert_eq!(
        tb.ssh(0, stops),
        killed_before,
        "the API server was killed at its stop timeout"
    );
    let (code, restarted) = support::verify_rows(inv);
    assert_eq!(failed(&restarted), Vec::<String>::new(), "{restarted:#?}");
    assert_eq!(code, 0);

    // Flannel, Calico and Cilium manifests: the test API server accepts every object in a
    // server-side dry run, and nothing is created
    for (cni, daemonset) in [
        ("flannel", "kube-flannel-ds"),
        ("calico", "calico-node"),
        ("cilium", "cilium"),
    ] {
        let inv = tb.inventory(
            &format!(
                "{}  cni:\n    name: {cni}\n",
                support::bundle_spec(&tb.bundle())
            ),
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
