//! `provision upgrade plan` on a cluster of the previous minor: nothing to do while the
//! inventory says what runs; the next minor planned in kubeadm's order; a downgrade and a Node
//! not Ready refused with exit 2. Real-cluster tier: needs the upstream builds of both minors
//! (`scripts/build-upstream all`).

mod support;
use std::time::{Duration, Instant};
use support::{Testbed, provision, provision_ok};

const OLD: &str = "1.36.4";
const NEW: &str = "1.37.2";

#[test]
fn upgrade_plan_lists_the_next_minor_in_order_and_refuses_a_downgrade_and_a_node_not_ready() {
    let Some((tb, old, new)) = support::two_minors_or_skip("upgrade plan", 2, OLD, NEW) else {
        return;
    };
    let (cp, worker) = (tb.machines[0].name.as_str(), tb.machines[1].name.as_str());
    let inv = tb.inventory(&support::bundle_spec(&old), &[]);
    let inv_s = inv.to_str().expect("a UTF-8 path").to_string();
    provision_ok(&["init", "-i", &inv_s]);
    provision_ok(&["join", "-i", &inv_s]);

    // the inventory says what runs: nothing to do, and the detailed exit code says so
    let same = provision(&["upgrade", "plan", "-i", &inv_s, "--detailed-exitcode"]);
    assert_eq!(same.code, 0, "{}", same.text());
    assert!(
        same.stdout.contains("nothing to upgrade"),
        "{}",
        same.stdout
    );

    // the next minor: the control plane first, then the add-ons, then the nodes
    tb.inventory(&support::bundle_spec(&new), &[]);
    let planned = provision(&[
        "upgrade",
        "plan",
        "-i",
        &inv_s,
        "--output",
        "json",
        "--detailed-exitcode",
    ]);
    assert_eq!(planned.code, 2, "changes pending: {}", planned.text());
    let plan: serde_json::Value = serde_json::from_str(&planned.stdout).expect("the plan's JSON");
    assert_eq!(plan["from"], OLD, "{plan:#}");
    assert_eq!(plan["to"], NEW, "{plan:#}");
    assert_eq!(
        plan["refusals"].as_array().map(Vec::len),
        Some(0),
        "{plan:#}"
    );
    let steps = plan["steps"].as_array().expect("steps");
    let row = |s: &serde_json::Value| {
        format!(
            "{} {} {} {}",
            s["stage"].as_str().unwrap_or_default(),
            s["host"].as_str().unwrap_or_default(),
            s["component"].as_str().unwrap_or_default(),
            s["to"].as_str().unwrap_or_default()
        )
    };
    let rows: Vec<String> = steps.iter().map(row).collect();
    let at = |want: &str| {
        rows.iter()
            .position(|r| r == want)
            .unwrap_or_else(|| panic!("{want} not planned: {rows:#?}"))
    };
    let apiserver = at(&format!("control-plane {cp} kube-apiserver {NEW}"));
    let cp_kubelet = at(&format!("control-plane node {cp} kubelet {NEW}"));
    let worker_kubelet = at(&format!("workers, batch 1 {worker} kubelet {NEW}"));
    assert!(
        apiserver < cp_kubelet && cp_kubelet < worker_kubelet,
        "{rows:#?}"
    );
    assert_eq!(steps[apiserver]["from"], OLD);
    let orders: Vec<u64> = steps.iter().filter_map(|s| s["order"].as_u64()).collect();
    assert!(orders.windows(2).all(|w| w[0] <= w[1]), "{orders:?}");
    // objects of an API version the target no longer serves refuse it, named, unless ignored
    // (a CRD whose old version the API server says is unavailable in the target minor)
    let kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";
    let schema =
        r#"{"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}"#;
    let crd = format!(
        r#"{{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {{"name": "widgets.example.com"}},
  "spec": {{"group": "example.com", "scope": "Namespaced",
    "names": {{"plural": "widgets", "singular": "widget", "kind": "Widget"}},
    "versions": [
      {{"name": "v1", "served": true, "storage": true, "schema": {schema}}},
      {{"name": "v1beta1", "served": true, "storage": false, "schema": {schema}, "deprecated": true,
        "deprecationWarning": "example.com/v1beta1 Widget is deprecated in v1.35+, unavailable in v1.37+; use example.com/v1"}}]}}}}"#
    );
    tb.ssh(
        0,
        &format!(
            "echo '{crd}' | {kubectl} apply -f - && {kubectl} wait --for=condition=Established crd/widgets.example.com --timeout=60s && echo '{{\"apiVersion\": \"example.com/v1\", \"kind\": \"Widget\", \"metadata\": {{\"name\": \"w1\", \"namespace\": \"default\"}}}}' | {kubectl} apply -f -"
        ),
    );
    let removed = provision(&["upgrade", "plan", "-i", &inv_s]);
    assert_eq!(removed.code, 2, "{}", removed.text());
    assert!(
        removed
            .stdout
            .contains("example.com/v1beta1 widgets (1): default/w1")
            && removed.stdout.contains("--ignore-deprecated-apis"),
        "{}",
        removed.stdout
    );
    let ignored = provision(&[
        "upgrade",
        "plan",
        "-i",
        &inv_s,
        "--ignore-deprecated-apis",
        "--output",
        "json",
    ]);
    assert_eq!(ignored.code, 0, "{}", ignored.text());
    let listed: serde_json::Value = serde_json::from_str(&ignored.stdout).expect("the plan's JSON");
    assert_eq!(
        listed["removed_apis"][0]["objects"][0], "default/w1",
        "{listed:#}"
    );
    tb.ssh(0, &format!("{kubectl} delete crd widgets.example.com"));

    let text = provision(&["upgrade", "plan", "-i", &inv_s]);
    assert_eq!(text.code, 0, "{}", text.text());
    assert!(
        text.stdout.contains(&format!("Kubernetes {OLD} → {NEW}")),
        "{}",
        text.stdout
    );

    // a cluster whose verify fails (CoreDNS scaled to nothing: its DNS rows fail) is refused
    let kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf -n kube-system";
    tb.ssh(
        0,
        &format!("{kubectl} scale deployment coredns --replicas=0"),
    );
    let no_dns = provision(&["upgrade", "plan", "-i", &inv_s]);
    assert_eq!(no_dns.code, 2, "{}", no_dns.text());
    assert!(
        no_dns.stdout.contains("verify fails (") && no_dns.stdout.contains("dns "),
        "{}",
        no_dns.stdout
    );
    tb.ssh(
        0,
        &format!(
            "{kubectl} scale deployment coredns --replicas=2 && {kubectl} rollout status deployment coredns --timeout=120s"
        ),
    );

    // a downgrade is refused before anything changes
    tb.inventory("  kubernetesVersion: 1.35.8\n", &[]);
    let down = provision(&["upgrade", "plan", "-i", &inv_s]);
    assert_eq!(down.code, 2, "{}", down.text());
    assert!(
        down.stdout
            .contains(&format!("{cp}: kube-apiserver runs {OLD}, newer than the inventory's 1.35.8: that is a downgrade")),
        "{}",
        down.stdout
    );

    // a Node not Ready refuses the upgrade, naming it (until the Node is marked so, verify's
    // rows on that node refuse it already)
    tb.ssh(1, "systemctl stop kubelet");
    tb.inventory(&support::bundle_spec(&new), &[]);
    let started = Instant::now();
    let not_ready = format!("{worker}: the Node is not Ready");
    let refused = loop {
        let r = provision(&["upgrade", "plan", "-i", &inv_s]);
        assert_eq!(r.code, 2, "a stopped kubelet is not refused: {}", r.text());
        if r.stdout.contains(&not_ready) || started.elapsed() > Duration::from_secs(120) {
            break r;
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    assert!(refused.stdout.contains(&not_ready), "{}", refused.stdout);
    // nothing changed: the control plane still runs the old minor
    let version = tb.ssh(0, "kube-apiserver --version");
    assert!(version.contains(OLD), "{version}");
}

/// The executable the unit runs on machine `i` (its version's directory names the version).
fn running(tb: &Testbed, i: usize, unit: &str) -> String {
    tb.ssh(
        i,
        &format!("readlink /proc/$(systemctl show -p MainPID --value {unit})/exe"),
    )
    .trim()
    .to_string()
}

#[test]
fn upgrade_apply_goes_a_minor_up_rolls_a_failing_node_back_and_continues_when_run_again() {
    let Some((tb, old, new)) = support::two_minors_or_skip("upgrade apply", 2, OLD, NEW) else {
        return;
    };
    let worker = tb.machines[1].name.as_str();
    let inv = tb.inventory(&support::bundle_spec(&old), &[]);
    let inv_s = inv.to_str().expect("a UTF-8 path").to_string();
    provision_ok(&["init", "-i", &inv_s]);
    provision_ok(&["join", "-i", &inv_s]);
    let kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";

    // the worker's kubelet refuses to start on anything but the old version: its upgrade fails
    tb.ssh(
        1,
        &format!(
            "mkdir -p /etc/systemd/system/kubelet.service.d && printf '[Service]\\nExecStartPre=/bin/sh -c \"readlink -f /usr/local/bin/kubelet | grep -q /{OLD}/\"\\n' > /etc/systemd/system/kubelet.service.d/50-old-only.conf && systemctl daemon-reload"
        ),
    );
    tb.inventory(&support::bundle_spec(&new), &[]);
    let failed = provision(&["upgrade", "apply", "-i", &inv_s, "--yes"]);
    assert_eq!(failed.code, 1, "{}", failed.text());
    assert!(
        failed.stdout.contains("etcd snapshot before the upgrade"),
        "{}",
        failed.text()
    );
    assert!(
        failed.stderr.contains(&format!(
            "{worker} rolled back to the versions it ran before"
        )),
        "{}",
        failed.text()
    );
    // the control plane went up; the worker runs the old kubelet again, schedulable
    assert!(running(&tb, 0, "kube-apiserver").contains(&format!("/{NEW}/")));
    assert!(running(&tb, 0, "kubelet").contains(&format!("/{NEW}/")));
    assert!(running(&tb, 1, "kubelet").contains(&format!("/{OLD}/")));
    let cordon = tb.ssh(
        0,
        &format!("{kubectl} get node {worker} -o jsonpath='{{.spec.unschedulable}}'"),
    );
    assert_eq!(cordon.trim(), "", "{worker} left cordoned");
    let snapshots: Vec<_> = std::fs::read_dir(tb.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("-etcd-before-"))
        .collect();
    assert!(!snapshots.is_empty(), "no snapshot beside the inventory");

    // the cause removed, the same command continues with what is left: the worker
    tb.ssh(
        1,
        "rm /etc/systemd/system/kubelet.service.d/50-old-only.conf && systemctl daemon-reload",
    );
    // a version older than the previous one, left by an earlier upgrade: removed at the end
    tb.ssh(1, "mkdir -p /opt/provision/kubelet/1.35.8");
    let apiserver_pid = tb.ssh(0, "systemctl show -p MainPID --value kube-apiserver");
    let done = provision(&["upgrade", "apply", "-i", &inv_s, "--yes"]);
    assert_eq!(done.code, 0, "{}", done.text());
    assert_eq!(
        tb.ssh(0, "systemctl show -p MainPID --value kube-apiserver"),
        apiserver_pid,
        "the upgraded API server was restarted again: {}",
        done.text()
    );
    assert!(running(&tb, 1, "kubelet").contains(&format!("/{NEW}/")));
    assert!(running(&tb, 1, "kube-proxy").contains(&format!("/{NEW}/")));
    let kept = tb.ssh(1, "ls /opt/provision/kubelet");
    assert_eq!(
        kept.split_whitespace().collect::<Vec<_>>(),
        [OLD, NEW],
        "the current and the previous version only"
    );
    let versions = tb.ssh(
        0,
        &format!("{kubectl} get nodes -o jsonpath='{{.items[*].status.nodeInfo.kubeletVersion}}'"),
    );
    assert_eq!(versions.trim(), format!("v{NEW} v{NEW}"));

    // nothing left: the plan says so, and init and join change nothing
    let again = provision_ok(&["upgrade", "apply", "-i", &inv_s, "--yes"]);
    assert!(
        again.stdout.contains("nothing to upgrade"),
        "{}",
        again.stdout
    );
    let rejoin = provision_ok(&["join", "-i", &inv_s, "--output", "json"]);
    assert_eq!(rejoin.changes(), 0, "{}", rejoin.text());

    // a run cut after a drain leaves its mark: status names the node, and the next run
    // uncordons it
    tb.ssh(
        0,
        &format!(
            "{kubectl} cordon {worker} && {kubectl} annotate node {worker} provision.io/cordoned-by=upgrade"
        ),
    );
    let status = provision(&["status", "-i", &inv_s]);
    assert_eq!(status.code, 1, "{}", status.text());
    assert!(
        status.text().contains(&format!(
            "{worker}: left cordoned by an upgrade that did not finish"
        )),
        "{}",
        status.text()
    );
    provision_ok(&["upgrade", "apply", "-i", &inv_s, "--yes"]);
    let cordon = tb.ssh(
        0,
        &format!("{kubectl} get node {worker} -o jsonpath='{{.spec.unschedulable}}'"),
    );
    assert_eq!(cordon.trim(), "", "{worker} still cordoned");
}
