//! NetworkPolicy on the built-in network (the real-cluster tier, PROVISION_UPSTREAM):
//! kube-router's firewall on every node, `verify`'s policy matrix passing on the same node and
//! across nodes, the seed's example (a database reachable only from the frontend), how fast
//! a deleted or edited policy takes effect, a stopped engine named by `verify` and restarted
//! by `join`, and a reset that leaves nothing of it. One control plane and two workers.

mod support;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{Testbed, provision_ok};

const KUBECTL: &str = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";

fn policy_rows(rows: &[Value]) -> Vec<&Value> {
    rows.iter()
        .filter(|r| r["check"] == "network-policy")
        .collect()
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Polls `cmd` on machine `i` until its success is `want`; how long that took.
fn until(tb: &Testbed, i: usize, cmd: &str, want: bool, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if tb.ssh_output(i, cmd).status.success() == want {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// A busybox pod serving its name on 8080 on `node`, labelled `role`.
fn pod(name: &str, role: &str, node: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{role: {role}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  tolerations: [{{operator: Exists}}]
  containers:
  - name: web
    image: {image}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 8080 -h /w"]
---
"#
    )
}

#[test]
fn the_builtin_network_enforces_network_policies() {
    let Some(upstream) = support::upstream_or_skip("NetworkPolicy on a real cluster") else {
        return;
    };
    let tb = Testbed::up_for_kubelet(3);
    let inv = &tb.bundle_inventory(&upstream);
    let names = tb.names();
    provision_ok(&["init", "-i", inv]);
    provision_ok(&["join", "-i", inv]);

    // the engine runs on every node, its kubeconfig readable by root alone, FORWARD hooked
    for (i, name) in names.iter().enumerate() {
        let state = tb.ssh(
            i,
            "systemctl is-active kube-router; stat -c %a /etc/kubernetes/network-policies/kubeconfig; iptables -S FORWARD | grep -c -- '-j KUBE-ROUTER-FORWARD'",
        );
        assert_eq!(state, "active\n600\n1\n", "{name}");
    }
    // its rights are the least it needs: it may watch pods, not read Secrets
    let can = tb.ssh(
        0,
        &format!(
            "{KUBECTL} auth can-i watch pods --as=system:serviceaccount:kube-system:kube-router; \
             {KUBECTL} auth can-i get secrets -n kube-system --as=system:serviceaccount:kube-system:kube-router || true"
        ),
    );
    assert_eq!(can, "yes\nno\n");

    // verify: every row of the policy matrix passes, refusals and admissions on the same node
    // and across nodes
    let (code, rows) = support::verify_rows(inv);
    let failed: Vec<&Value> = rows.iter().filter(|r| r["outcome"] != "pass").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, 0);
    let policy = policy_rows(&rows);
    assert_eq!(policy.len(), 23, "{policy:#?}");
    for placement in ["same node", "other node"] {
        for expected in ["expected allowed", "expected refused"] {
            assert!(
                policy.iter().any(|r| {
                    let d = text(r, "detail");
                    d.contains(placement) && d.contains(expected)
                }),
                "no {placement} row with {expected}: {policy:#?}"
            );
        }
    }
    for name in [
        "default-deny-ingress",
        "allow-from-pod-selector",
        "allow-from-namespace-selector",
        "allow-from-ip-block",
        "allow-named-port",
        "allow-port-range",
        "default-deny-egress-but-dns",
    ] {
        assert!(
            policy
                .iter()
                .any(|r| text(r, "subject").starts_with(&format!("{name}: "))),
            "{name}: {policy:#?}"
        );
    }
    assert!(
        policy
            .iter()
            .any(|r| text(r, "subject").contains("readiness probe")),
        "{policy:#?}"
    );

    // the seed's example: pods labelled role=db reachable only from role=frontend; a frontend
    // and a backend beside the database and on the other worker
    let image = format!(
        "registry.k8s.io/e2e-test-images/busybox:{}",
        support::bundle_version(&tb.bundle(), "busybox")
    );
    let mut manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n".to_string();
    for (name, role, node) in [
        ("db", "db", names[1]),
        ("frontend-near", "frontend", names[1]),
        ("backend-near", "backend", names[1]),
        ("frontend-far", "frontend", names[2]),
        ("backend-far", "backend", names[2]),
    ] {
        manifest.push_str(&pod(name, role, node, &image));
    }
    tb.ssh(
        0,
        &format!("cat <<'EOF' | {KUBECTL} apply -f -\n{manifest}EOF\n{KUBECTL} -n shop wait --for=condition=Ready pod --all --timeout=120s"),
    );
    let db_ip = tb.ssh(
        0,
        &format!("{KUBECTL} -n shop get pod db -o jsonpath='{{.status.podIP}}'"),
    );
    let reach = |from: &str| {
        format!(
            "{KUBECTL} -n shop exec {from} -- sh -c 'timeout 3 wget -q -O - http://{db_ip}:8080/' | grep -qx db"
        )
    };
    let policy = format!(
        "cat <<'EOF' | {KUBECTL} apply -f -\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db, namespace: shop}}\nspec:\n  podSelector: {{matchLabels: {{role: db}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{role: ROLE}}}}}}]\n    ports: [{{port: 8080, protocol: TCP}}]\nEOF"
    );
    tb.ssh(0, &policy.replace("ROLE", "frontend"));
    let wait = Duration::from_secs(20);
    for from in ["frontend-near", "frontend-far"] {
        assert!(
            until(&tb, 0, &reach(from), true, wait).is_some(),
            "{from} refused"
        );
    }
    for from in ["backend-near", "backend-far"] {
        assert!(
            until(&tb, 0, &reach(from), false, wait).is_some(),
            "{from} let in"
        );
        // refused: a reset or no answer within the time limit, never the page
        let out = tb.ssh_output(
            0,
            &format!(
                "{KUBECTL} -n shop exec {from} -- sh -c 'timeout 3 wget -q -O - http://{db_ip}:8080/'"
            ),
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && out.stdout.is_empty()
                && (said.contains("Connection refused") || said.contains("exit code 143")),
            "{from}: {said}"
        );
    }
    // an edit takes effect: the backend in, the frontend out
    tb.ssh(0, &policy.replace("ROLE", "backend"));
    let edited_in =
        until(&tb, 0, &reach("backend-far"), true, wait).expect("edit: backend refused");
    let edited_out =
        until(&tb, 0, &reach("frontend-far"), false, wait).expect("edit: frontend let in");
    // deleting the policy opens the database to everyone
    tb.ssh(0, &format!("{KUBECTL} -n shop delete networkpolicy db"));
    let deleted = until(&tb, 0, &reach("frontend-far"), true, wait).expect("delete: still refused");
    assert!(until(&tb, 0, &reach("backend-near"), true, wait).is_some());
    println!(
        "policy edit effective in {:.2} s (let in) / {:.2} s (kept out); deletion in {:.2} s",
        edited_in.as_secs_f32(),
        edited_out.as_secs_f32(),
        deleted.as_secs_f32()
    );

    // a Service without endpoints is refused at once from a pod, as kube-proxy means it to be
    // (the engine accepts pods' packets before kube-proxy's refusal): nothing leaves the node
    // for the Service's address, and no connection hangs until its client gives up
    let empty = tb.ssh(
        0,
        &format!(
            "{KUBECTL} -n shop create service clusterip empty --tcp=80:80 >/dev/null && \
             {KUBECTL} -n shop get service empty -o jsonpath='{{.spec.clusterIP}}'"
        ),
    );
    for from in ["frontend-near", "frontend-far"] {
        let out = tb.ssh_output(
            0,
            &format!(
                "{KUBECTL} -n shop exec {from} -- sh -c 'timeout 10 wget -q -O - http://{empty}/'"
            ),
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("unreachable"),
            "{from} → {empty}: {said}"
        );
    }
    for (i, name) in names.iter().enumerate() {
        let pref = provision::cni::policy_engine::UNTRANSLATED_SERVICE_RULE;
        let rule = tb.ssh(i, &format!("ip rule show pref {pref}"));
        assert!(
            rule.contains("from 10.88.0.0/16 to 10.96.0.0/12 unreachable"),
            "{name}: {rule}"
        );
    }
    tb.ssh(0, &format!("{KUBECTL} delete namespace shop --wait=false"));

    // the engine stopped on the first worker: the rows it decides fail, naming it and the
    // repair; nothing else fails
    tb.ssh(1, "systemctl stop kube-router");
    let (code, stopped) = support::verify_rows(inv);
    assert_eq!(code, 1);
    let failed: Vec<&Value> = stopped.iter().filter(|r| r["outcome"] == "fail").collect();
    assert!(!failed.is_empty(), "{stopped:#?}");
    for r in &failed {
        assert_eq!(r["check"], "network-policy", "{r:#?}");
        let cause = text(r, "cause");
        assert!(
            cause.contains(&format!("kube-router is inactive on {}", names[1]))
                && cause.contains(&format!("provision join --hosts {}", names[1])),
            "{r:#?}"
        );
    }
    let repair = provision_ok(&["join", "--hosts", names[1], "-i", inv, "--output", "json"]);
    assert!(repair.changes() >= 1, "{}", repair.text());
    let (code, repaired) = support::verify_rows(inv);
    let failed: Vec<&Value> = repaired.iter().filter(|r| r["outcome"] != "pass").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, 0);

    // a re-run changes nothing
    let again = provision_ok(&["init", "-i", inv, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    let again = provision_ok(&["join", "-i", inv, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // reset leaves nothing of it: no unit, no kubeconfig, no chain, no ipset
    provision_ok(&["reset", "-i", inv, "--yes"]);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(support::leftovers(&tb, i), "", "{name}");
    }
}
