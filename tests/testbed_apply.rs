//! `provision apply`, and the upgrade it runs, as an operator sees them: bare machines to a
//! verified cluster in one command, no change when run again; then, with a workload behind a
//! NodePort and a PodDisruptionBudget and a client outside the cluster sending requests all
//! along, the next minor and a new host in the inventory: a drain the budget blocks stops the
//! upgrade (named, nothing left cordoned), and once the budget allows it the upgrade goes node
//! by node in kubeadm's order, every request answered, and the new host joins at the new
//! version. Real-cluster tier: needs the upstream builds of both minors
//! (`scripts/build-upstream all`).

mod support;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::traffic::{self, client, host_events};
use support::{provision, provision_ok};

const OLD: &str = "1.36.4";
const NEW: &str = "1.37.2";
#[test]
fn apply_builds_the_cluster_then_upgrades_it_losing_no_request_and_joins_a_new_host() {
    let Some((tb, old, new)) = support::two_minors_or_skip("apply", 4, OLD, NEW) else {
        return;
    };
    let names: Vec<&str> = tb.machines.iter().map(|m| m.name.as_str()).collect();
    let three = [(0, "control-plane"), (1, "worker"), (2, "worker")];
    let inv = tb.inventory_of(&support::bundle_spec(&old), &[], &three);
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
        3,
        "{nodes}"
    );

    // nothing moved: no change, and a plan for machines says so
    let again = provision_ok(&["apply", "-i", &inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    let plan = provision(&["apply", "-i", &inv_s, "--dry-run", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.text());

    // 3 replicas behind a NodePort, the budget allowing none away; a client outside the
    // cluster from now on
    tb.ssh(0, &traffic::apply_web(&traffic::web(3)));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = client(tb.machines[0].address.clone(), stop.clone());

    // the next minor, and a fourth host
    let four = [
        (0, "control-plane"),
        (1, "worker"),
        (2, "worker"),
        (3, "worker"),
    ];
    tb.inventory_of(&support::bundle_spec(&new), &[], &four);
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
            3,
            "test -e /etc/kubernetes/kubelet.conf && echo joined || echo bare"
        )
        .trim(),
        "bare"
    );

    // a budget that allows no eviction stops the first worker's drain after the drain timeout,
    // naming the pod and the budget; the worker is not left cordoned
    let blocked = provision(&[
        "apply",
        "-i",
        &inv_s,
        "--yes",
        "--drain-timeout",
        "15s",
        "--output",
        "json",
    ]);
    assert_eq!(blocked.code, 1, "{}", blocked.text());
    // kubeadm's order: the control plane, then its node through all of its steps, then the
    // first worker's drain
    let events = host_events(&blocked);
    let at = |phase: &str, host: &str| {
        events
            .iter()
            .position(|(p, h)| p == phase && h == host)
            .unwrap_or_else(|| panic!("no {phase} on {host}: {events:?}"))
    };
    assert!(at("control-planes/control-plane", names[0]) < at("nodes/drain", names[0]));
    assert!(at("nodes/uncordon", names[0]) < at("nodes/drain", names[1]));
    assert!(
        blocked.text().contains("by default/web") && blocked.text().contains("after 15 s"),
        "{}",
        blocked.text()
    );
    let cordoned = tb.ssh(
        0,
        &format!("{kubectl} get nodes -o jsonpath='{{.items[*].spec.unschedulable}}'"),
    );
    assert_eq!(cordoned.trim(), "", "a node left cordoned");

    // the budget lets one replica go at a time: the upgrade goes through
    tb.ssh(
        0,
        &format!("{kubectl} patch pdb web --type=merge -p '{{\"spec\": {{\"minAvailable\": 2}}}}'"),
    );
    let upgraded = provision_ok(&["apply", "-i", &inv_s, "--yes", "--output", "json"]);
    stop.store(true, Ordering::SeqCst);
    let (answered, failed) = requests.join().expect("the client");

    // the run went on where the last stopped: each worker through all of its steps before the
    // next is drained; then the new host joins
    let events = host_events(&upgraded);
    let at = |phase: &str, host: &str| {
        events
            .iter()
            .position(|(p, h)| p == phase && h == host)
            .unwrap_or_else(|| panic!("no {phase} on {host}: {events:?}"))
    };
    assert!(
        !events.iter().any(|(p, _)| p.starts_with("control-planes/")),
        "the control plane was upgraded again: {events:?}"
    );
    assert!(at("nodes/drain", names[1]) < at("nodes/uncordon", names[1]));
    assert!(at("nodes/uncordon", names[1]) < at("nodes/drain", names[2]));
    assert!(at("nodes/uncordon", names[2]) < at("kubelet", names[3]));
    let versions = tb.ssh(
        0,
        &format!(
            "{kubectl} get nodes -o jsonpath='{{range .items[*]}}{{.metadata.name}}={{.status.nodeInfo.kubeletVersion}} {{end}}'"
        ),
    );
    for n in &names {
        assert!(versions.contains(&format!("{n}=v{NEW}")), "{n}: {versions}");
    }
    let cordoned = tb.ssh(
        0,
        &format!("{kubectl} get nodes -o jsonpath='{{.items[*].spec.unschedulable}}'"),
    );
    assert_eq!(cordoned.trim(), "", "a node left cordoned");
    traffic::assert_few_failed(answered, &failed);

    let again = provision_ok(&["apply", "-i", &inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
}
