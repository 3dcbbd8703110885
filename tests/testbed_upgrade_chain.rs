//! `provision upgrade apply --chain` over two minors on two control planes (etcd with two
//! members) and a worker, with a workload behind a NodePort and a client outside the cluster
//! all along: a skipped minor refused unless chained; the chain interrupted by Ctrl-C (the
//! node it left cordoned named) and run again: a minor at a time, the control planes one after
//! the other, a certificate close to expiry renewed on the way, a drain past a budget with
//! `--force`, every component on the last minor, few or no requests lost. Real-cluster tier:
//! needs the upstream builds of three minors (`scripts/build-upstream all`).

mod support;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::traffic::{self, client, host_events};
use support::{Testbed, provision, provision_ok};

const FIRST: &str = "1.35.8";
const MIDDLE: &str = "1.36.4";
const LAST: &str = "1.37.2";

/// The kubelet version of every Node, `name=vX.Y.Z` each.
fn kubelet_versions(tb: &Testbed) -> String {
    tb.ssh(
        0,
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.nodeInfo.kubeletVersion} {end}'",
    )
}

/// Days until the API server certificate of machine `i` expires.
fn apiserver_days_left(tb: &Testbed, i: usize) -> i64 {
    let end = tb.ssh(
        i,
        "date -d \"$(openssl x509 -noout -enddate -in /etc/kubernetes/pki/apiserver.crt | cut -d= -f2)\" +%s",
    );
    let now = tb.ssh(i, "date +%s");
    (end.trim().parse::<i64>().unwrap() - now.trim().parse::<i64>().unwrap()) / 86_400
}

#[test]
fn a_chain_goes_one_minor_at_a_time_through_an_interruption_losing_no_request() {
    let Some(upstream) = support::upstream_or_skip("upgrade --chain") else {
        return;
    };
    if let Some(v) = [FIRST, MIDDLE]
        .into_iter()
        .find(|v| !upstream.join("kubernetes").join(v).is_dir())
    {
        eprintln!(
            "SKIPPED: upgrade --chain: Kubernetes {v} is not built (scripts/build-upstream all)"
        );
        return;
    }
    let tb = Testbed::up_for_kubelet(3);
    let bundle = support::testbed_bundle_of_versions(
        tb.dir.path(),
        "bundle",
        &upstream,
        &[FIRST, MIDDLE, LAST],
    );
    let spec = |v: &str| {
        format!(
            "  kubernetesVersion: {v}\n  bundle:\n    dir: {}\n",
            bundle.display()
        )
    };
    let names: Vec<&str> = tb.machines.iter().map(|m| m.name.as_str()).collect();
    let (cp1, cp2, worker) = (names[0], names[1], names[2]);
    let inv = tb.inventory_with_control_planes(&spec(FIRST), &[], 2);
    let inv_s = inv.to_str().expect("a UTF-8 path").to_string();
    let kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";
    // (verify runs in each step of the chain)
    provision_ok(&["init", "-i", &inv_s, "--skip-phases", "verify"]);
    provision_ok(&["join", "-i", &inv_s, "--skip-phases", "verify"]);
    assert_eq!(
        kubelet_versions(&tb).matches(&format!("=v{FIRST}")).count(),
        3
    );
    tb.ssh(0, &traffic::apply_web(&traffic::web(2)));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = client(tb.machines[2].address.clone(), stop.clone());

    // the second control plane's API server certificate, re-signed by the cluster CA to expire
    // in 10 days: inside the renewal window
    tb.ssh(
        1,
        "cd /etc/kubernetes/pki && openssl x509 -x509toreq -copy_extensions copyall -in apiserver.crt -signkey apiserver.key -out /tmp/apiserver.csr 2>/dev/null && openssl x509 -req -days 10 -copy_extensions copyall -in /tmp/apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt 2>/dev/null",
    );
    assert!(apiserver_days_left(&tb, 1) < 11);

    // two minors up: refused, naming --chain; with it, the first step planned
    tb.inventory_with_control_planes(&spec(LAST), &[], 2);
    let skipped = provision(&["upgrade", "plan", "-i", &inv_s]);
    assert_eq!(skipped.code, 2, "{}", skipped.text());
    assert!(
        skipped
            .stdout
            .contains(&format!("{FIRST} → {LAST} skips a minor"))
            && skipped.stdout.contains(&format!(
                "--chain ({FIRST} → {MIDDLE} → {LAST}, verify between steps)"
            )),
        "{}",
        skipped.stdout
    );
    let chained = provision(&["upgrade", "plan", "-i", &inv_s, "--chain"]);
    assert_eq!(chained.code, 0, "{}", chained.text());
    assert!(
        chained
            .stdout
            .contains(&format!("Kubernetes {FIRST} → {MIDDLE}"))
            && chained.stdout.contains(&format!(
                "a chain of one-minor upgrades: {FIRST} → {MIDDLE} → {LAST}"
            ))
            && chained.stdout.contains(&format!("{cp2}: apiserver (")),
        "{}",
        chained.stdout
    );

    // Ctrl-C once the worker is drained in the first step: the run says the worker is left
    // cordoned, and so does status
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "upgrade", "apply", "-i", &inv_s, "--chain", "--yes", "--output", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run provision");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        seen.push(line);
        if event["event"] == "host"
            && event["phase"] == "nodes/drain"
            && event["result"]["host"] == worker
        {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill");
            break;
        }
    }
    let out = child.wait_with_output().expect("provision's end");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}\n{stderr}",
        seen.join("\n")
    );
    assert!(
        stderr.contains(&format!("{worker} is left cordoned by this upgrade")),
        "{stderr}"
    );
    let status = provision(&["status", "-i", &inv_s]);
    assert!(
        status.text().contains(&format!(
            "{worker}: left cordoned by an upgrade that did not finish"
        )),
        "{}",
        status.text()
    );
    // the control planes went to the middle minor; the worker's kubelet not (yet)
    let versions = kubelet_versions(&tb);
    assert!(
        versions.contains(&format!("{cp1}=v{MIDDLE}"))
            && versions.contains(&format!("{cp2}=v{MIDDLE}")),
        "{versions}"
    );

    // run again, the budget now allowing no eviction: --force deletes past it after the wait
    tb.ssh(
        0,
        &format!("{kubectl} patch pdb web --type=merge -p '{{\"spec\": {{\"minAvailable\": 3}}}}'"),
    );
    let done = provision_ok(&[
        "upgrade",
        "apply",
        "-i",
        &inv_s,
        "--chain",
        "--yes",
        "--force",
        "--drain-timeout",
        "5s",
        "--output",
        "json",
    ]);
    stop.store(true, Ordering::SeqCst);
    let (answered, failed) = requests.join().expect("the client");
    let steps: Vec<String> = done
        .events()
        .iter()
        .filter(|e| e["event"] == "chain-step")
        .map(|e| {
            e["step"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(steps, [MIDDLE, LAST], "{}", done.text());
    assert!(
        done.stdout
            .contains("past their PodDisruptionBudget (--force)"),
        "{}",
        done.text()
    );
    // the last step in kubeadm's order: one control plane after the other, then node by node
    let events = host_events(&done);
    let last_step = events
        .iter()
        .rposition(|(p, h)| p == "nodes/uncordon" && h == worker)
        .and_then(|end| {
            events[..end]
                .iter()
                .rposition(|(p, h)| p == "nodes/uncordon" && h == worker)
        })
        .map(|prev| events[prev + 1..].to_vec())
        .unwrap_or_else(|| panic!("two steps ending with the worker: {events:?}"));
    let at = |phase: &str, host: &str| {
        last_step
            .iter()
            .position(|(p, h)| p == phase && h == host)
            .unwrap_or_else(|| panic!("no {phase} on {host}: {last_step:?}"))
    };
    assert!(at("control-planes/control-plane", cp1) < at("control-planes/switch", cp2));
    assert!(at("control-planes/control-plane", cp2) < at("nodes/drain", cp1));
    assert!(at("nodes/uncordon", cp1) < at("nodes/drain", cp2));
    assert!(at("nodes/uncordon", cp2) < at("nodes/drain", worker));

    // everything on the last minor, both etcd members healthy, the certificate renewed
    let versions = kubelet_versions(&tb);
    assert_eq!(
        versions.matches(&format!("=v{LAST}")).count(),
        3,
        "{versions}"
    );
    for i in 0..2 {
        assert!(
            tb.ssh(i, "kube-apiserver --version").contains(LAST),
            "machine {i}"
        );
    }
    let members = tb.ssh(
        0,
        "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key endpoint health --cluster",
    );
    assert_eq!(members.matches("is healthy").count(), 2, "{members}");
    assert!(apiserver_days_left(&tb, 1) > 300);
    let cordoned = tb.ssh(
        0,
        &format!("{kubectl} get nodes -o jsonpath='{{.items[*].spec.unschedulable}}'"),
    );
    assert_eq!(cordoned.trim(), "", "a node left cordoned");
    traffic::assert_few_failed(answered, &failed);

    let again = provision_ok(&["upgrade", "apply", "-i", &inv_s, "--chain", "--yes"]);
    assert!(
        again.stdout.contains("nothing to upgrade"),
        "{}",
        again.stdout
    );
}
