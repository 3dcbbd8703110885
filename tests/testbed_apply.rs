//! `provision apply`: one command from bare machines to a verified cluster, no change when run
//! again, and, when the inventory adds a host and moves the version, the upgrade (asked first;
//! a drain a PodDisruptionBudget blocks stops it, named) then the new host's join at the new
//! version. Real-cluster tier: the upgrade part needs the
//! upstream builds of both minors (`scripts/build-upstream all`).

mod support;
use support::{Testbed, provision, provision_ok};

const OLD: &str = "1.36.4";
const NEW: &str = "1.37.2";

#[test]
fn apply_builds_the_cluster_then_upgrades_it_and_joins_a_new_host() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    if !upstream.join("kubernetes").join(OLD).is_dir() {
        eprintln!("SKIPPED: apply: Kubernetes {OLD} is not built (scripts/build-upstream all)");
        return;
    }
    let tb = Testbed::up_for_kubelet(3);
    let old = support::testbed_bundle_of(tb.dir.path(), "bundle-old", &upstream, OLD);
    let new = support::testbed_bundle_of(tb.dir.path(), "bundle-new", &upstream, NEW);
    let two = [(0, "control-plane"), (1, "worker")];
    let inv = tb.inventory_of(&support::bundle_spec(&old), &[], &two);
    let inv_s = inv.to_str().expect("a UTF-8 path").to_string();
    let kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";

    // bare machines: a cluster, verified
    let built = provision_ok(&["apply", "-i", &inv_s]);
    assert!(
        built.stdout.contains("==> verify") && built.stdout.contains("apply done"),
        "{}",
        built.stdout
    );
    let nodes = tb.ssh(0, &format!("{kubectl} get nodes --no-headers"));
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        2,
        "{nodes}"
    );

    // nothing moved: no change, and a plan for machines says so
    let again = provision_ok(&["apply", "-i", &inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    let plan = provision(&["apply", "-i", &inv_s, "--dry-run", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.text());

    // a third host and the next minor
    let three = [(0, "control-plane"), (1, "worker"), (2, "worker")];
    tb.inventory_of(&support::bundle_spec(&new), &[], &three);
    let pending = provision(&["apply", "-i", &inv_s, "--dry-run", "--detailed-exitcode"]);
    assert_eq!(pending.code, 2, "{}", pending.text());
    // without a terminal and without --yes the upgrade is not made, and nothing changed
    let unasked = provision(&["apply", "-i", &inv_s]);
    assert_eq!(unasked.code, 2, "{}", unasked.text());
    assert!(unasked.stderr.contains("Pass --yes"), "{}", unasked.text());
    let server = tb.ssh(0, "kube-apiserver --version");
    assert!(server.contains(OLD), "changed without asking: {server}");
    assert_eq!(
        tb.ssh(
            2,
            "test -e /etc/kubernetes/kubelet.conf && echo joined || echo bare"
        )
        .trim(),
        "bare"
    );

    // a PodDisruptionBudget that allows no eviction stops the worker's drain after the drain
    // timeout, naming the pod and the budget; the worker is not left cordoned
    let web = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"terminationGracePeriodSeconds": 1,
      "containers": [{"name": "web", "image": "registry.k8s.io/e2e-test-images/busybox:1.35.0",
        "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}}}"#;
    let pdb = r#"{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "default"},
  "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}"#;
    tb.ssh(
        0,
        &format!(
            "echo '{web}' | {kubectl} apply -f - && echo '{pdb}' | {kubectl} apply -f - && {kubectl} rollout status deployment/web --timeout=120s"
        ),
    );
    let blocked = provision(&["apply", "-i", &inv_s, "--yes", "--drain-timeout", "15s"]);
    assert_eq!(blocked.code, 1, "{}", blocked.text());
    assert!(
        blocked.text().contains("by default/web") && blocked.text().contains("after 15 s"),
        "{}",
        blocked.text()
    );
    let worker = &tb.machines[1].name;
    let cordon = tb.ssh(
        0,
        &format!("{kubectl} get node {worker} -o jsonpath='{{.spec.unschedulable}}'"),
    );
    assert_eq!(cordon.trim(), "", "{worker} left cordoned");
    tb.ssh(0, &format!("{kubectl} delete pdb web"));

    let upgraded = provision_ok(&["apply", "-i", &inv_s, "--yes"]);
    assert!(
        upgraded
            .stdout
            .contains(&format!("Kubernetes {OLD} → {NEW}")),
        "{}",
        upgraded.stdout
    );
    let versions = tb.ssh(
        0,
        &format!(
            "{kubectl} get nodes -o jsonpath='{{range .items[*]}}{{.metadata.name}}={{.status.nodeInfo.kubeletVersion}} {{end}}'"
        ),
    );
    for m in &tb.machines {
        assert!(
            versions.contains(&format!("{}=v{NEW}", m.name)),
            "{}: {versions}",
            m.name
        );
    }
    let cordoned = tb.ssh(
        0,
        &format!("{kubectl} get nodes -o jsonpath='{{.items[*].spec.unschedulable}}'"),
    );
    assert_eq!(cordoned.trim(), "", "a node left cordoned");
    let again = provision_ok(&["apply", "-i", &inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
}
