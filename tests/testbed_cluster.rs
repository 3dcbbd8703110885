//! The real-cluster tier: `provision init` on one control-plane machine and `provision join` of
//! two workers make a working Kubernetes cluster (Kubernetes, etcd, containerd, runc, the CNI
//! plugins, crictl and CoreDNS built from upstream's Go modules by scripts/build-upstream, named
//! by PROVISION_UPSTREAM; busybox images). Without the builds the test says it was skipped, and why.

mod support;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Testbed, provision, provision_ok};

/// Nodes and their Ready condition, through kube-rs with the local admin kubeconfig.
async fn ready_nodes(kubeconfig: &Path) -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(kubeconfig).expect("the local admin kubeconfig");
    let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: Api<Node> = Api::all(client);
    let mut out: Vec<(String, bool)> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (n.metadata.name.unwrap_or_default(), ready)
        })
        .collect();
    out.sort();
    out
}

/// The units provision runs, with when each last started: unchanged means not restarted.
fn unit_starts(tb: &Testbed, i: usize) -> String {
    tb.ssh(
        i,
        "for u in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do \
           systemctl show -p ActiveEnterTimestampMonotonic -p NRestarts --value $u.service 2>/dev/null | tr '\\n' ' '; echo; done",
    )
}

/// One cluster at a time: two on 2 cores would slow each other past their time limits.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn init_and_join_make_a_working_cluster_that_reruns_clean_survives_reboot_and_recovers() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let tb = Testbed::up_for_kubelet(3);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    let inv_s = inv.to_str().unwrap();
    let kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";

    // init stopped after etcd, then etcd stopped: the next init completes the cluster
    provision_ok(&[
        "init",
        "-i",
        inv_s,
        "--skip-phases",
        "control-plane,bootstrap,csr-approver,kubelet,kube-proxy,network-policy,addons,verify",
    ]);
    tb.ssh(0, "systemctl is-active etcd && systemctl stop etcd");
    let init = provision_ok(&["init", "-i", inv_s, "--output", "json"]);
    assert!(init.changes() > 0);
    assert_eq!(tb.ssh(0, "systemctl is-active etcd").trim(), "active");

    // a kubelet that cannot run as configured (here another installation's drop-in gives it a
    // flag it does not know, let through preflight): join says so within seconds, with the
    // kubelet's own error, instead of waiting out the minutes allowed for Node Ready
    let drop_in = "/etc/systemd/system/kubelet.service.d/99-other.conf";
    tb.ssh(
        1,
        &format!(
            "mkdir -p {dir} && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/kubelet --no-such-flag\\n' > {drop_in}",
            dir = "/etc/systemd/system/kubelet.service.d"
        ),
    );
    let broken = provision(&[
        "join",
        "-i",
        inv_s,
        "--ignore-preflight-errors",
        "UnitDropIn",
        "--output",
        "json",
    ]);
    assert_eq!(broken.code, 1, "{}", broken.text());
    let worker = tb.machines[1].name.as_str();
    let kubelets = broken.hosts_of("kubelet");
    let on_1 = kubelets
        .iter()
        .find(|h| h["host"] == worker)
        .unwrap_or_else(|| panic!("no kubelet row of {worker}: {}", broken.text()));
    // (waiting out Node Ready would say "is not Ready after 180 s" instead)
    let error = on_1["error"].as_str().unwrap_or("");
    assert!(
        error.contains(&format!("kubelet on {worker} exited"))
            && error.contains("cannot run as configured")
            && error.contains("unknown flag: --no-such-flag"),
        "{error}"
    );
    // once the cause is gone, the same command completes
    tb.ssh(1, &format!("rm {drop_in}"));
    let join = provision_ok(&["join", "-i", inv_s, "--output", "json"]);
    assert_eq!(join.hosts_of("kubelet").len(), 2, "{}", join.text());

    let kubeconfig = tb.dir.path().join("test-admin.conf");
    let names: Vec<String> = tb.machines.iter().map(|m| m.name.clone()).collect();
    let nodes = ready_nodes(&kubeconfig).await;
    assert_eq!(
        nodes,
        names.iter().map(|n| (n.clone(), true)).collect::<Vec<_>>(),
        "not every node is Ready"
    );
    // the versions the bundle holds are the ones that run: the API server's /version, and
    // containerd 2 behind the CRI on every node
    let kube = support::bundle_kube_version(&bundle);
    let version = tb.ssh(0, &format!("{kubectl} version"));
    assert!(
        version.contains(&format!("Server Version: v{kube}")),
        "{version}"
    );
    for (i, n) in names.iter().enumerate() {
        let cri = tb.ssh(i, "crictl version");
        assert!(
            cri.contains("RuntimeName:  containerd") && cri.contains("RuntimeVersion:  v2."),
            "{n}: {cri}"
        );
    }
    // every kubelet runs with the inventory's eviction thresholds, the others kept at their defaults
    for n in &names {
        let config = tb.ssh(
            0,
            &format!("{kubectl} get --raw /api/v1/nodes/{n}/proxy/configz"),
        );
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        let hard = &config["kubeletconfig"]["evictionHard"];
        assert_eq!(
            (
                &hard["imagefs.available"],
                &hard["nodefs.available"],
                &hard["memory.available"]
            ),
            (&"2Gi".into(), &"1Gi".into(), &"100Mi".into()),
            "{n}: {hard}"
        );
    }
    let roles = tb.ssh(0, &format!("{kubectl} get node {} --show-labels", names[0]));
    assert!(
        roles.contains("node-role.kubernetes.io/control-plane"),
        "{roles}"
    );

    // a busybox pod on every node: it runs, and logs and exec reach it (API server -> kubelet)
    for n in &names {
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("bb-{n}")},
            "spec": {"nodeName": n, "containers": [{
                "name": "bb", "image": "registry.k8s.io/e2e-test-images/busybox:1.35.0",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo started on $(hostname); sleep 3600"]}],
                "terminationGracePeriodSeconds": 1}
        })
        .to_string();
        let out = tb.ssh_output(0, &format!("echo '{manifest}' | {kubectl} apply -f -"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let waited = tb.ssh_output(
        0,
        &format!("{kubectl} wait --for=condition=Ready pod --all --timeout=90s"),
    );
    assert!(
        waited.status.success(),
        "pods not Ready: {}{}",
        String::from_utf8_lossy(&waited.stderr),
        tb.ssh(
            0,
            &format!("{kubectl} get pods -o wide; {kubectl} describe pods | tail -30")
        )
    );
    for n in &names {
        let logs = tb.ssh(0, &format!("{kubectl} logs bb-{n}"));
        assert_eq!(logs.trim(), format!("started on bb-{n}"));
        let exec = tb.ssh(
            0,
            &format!("{kubectl} exec bb-{n} -- sh -c 'echo from $(hostname)'"),
        );
        assert_eq!(exec.trim(), format!("from bb-{n}"));
    }

    // nothing left to do, and nothing restarted
    let before: Vec<String> = (0..3).map(|i| unit_starts(&tb, i)).collect();
    let again = provision_ok(&["init", "-i", inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    let again = provision_ok(&["join", "-i", inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    let after: Vec<String> = (0..3).map(|i| unit_starts(&tb, i)).collect();
    assert_eq!(before, after, "a re-run restarted a unit");

    // a worker rebooted comes back Ready without provision: a new boot ID, Ready, its pod
    // restarted and Running (which needs the runtime, the CNI config and the routes)
    let w = &names[2];
    let boot_id = |tb: &Testbed| {
        tb.ssh(0, &format!("{kubectl} get node {w} -o jsonpath='{{.status.nodeInfo.bootID}} {{.status.conditions[?(@.type==\"Ready\")].status}}'"))
    };
    let pod = |tb: &Testbed| {
        tb.ssh(0, &format!("{kubectl} get pod bb-{w} -o jsonpath='{{.status.phase}} {{.status.containerStatuses[0].restartCount}}'"))
    };
    let before_boot = boot_id(&tb);
    assert!(before_boot.ends_with(" True"), "{before_boot}");
    let _ = tb.ssh_output(2, "systemctl reboot");
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = boot_id(&tb);
        let p = pod(&tb);
        if now.split(' ').next() != before_boot.split(' ').next()
            && now.ends_with(" True")
            && p.starts_with("Running ")
            && p != "Running 0"
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "after a reboot: node {now}, pod {p}\n{}",
            tb.ssh(
                0,
                &format!("{kubectl} get nodes; {kubectl} get pods -o wide")
            )
        );
    }
    // the overlay's routes come back by themselves too (the unit may start a moment after the pod)
    let ready_at = Instant::now();
    let mut routes = tb.ssh(2, "ip route");
    while routes
        .lines()
        .filter(|l| l.contains("dev provision-vx"))
        .count()
        < 2
        && ready_at.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_secs(1));
        routes = tb.ssh(2, "ip route");
    }
    // the overlay's routes to the other two nodes' pod CIDRs
    assert_eq!(
        routes
            .lines()
            .filter(|l| l.contains("dev provision-vx"))
            .count(),
        2,
        "the pod routes did not come back: {routes}\n{}",
        tb.ssh(
            2,
            "systemctl status provision-pod-routes --no-pager; journalctl -b -u provision-pod-routes --no-pager -o cat | tail -n 20"
        )
    );

    // the worker leaves: drained (its pod evicted), reset, its Node deleted; the others stay
    let leave = provision_ok(&[
        "reset", "-i", inv_s, "--hosts", w, "--yes", "--output", "json",
    ]);
    let text = leave.text();
    assert!(
        text.contains(&format!("evict 1 pod(s) from {w}: default/bb-{w}")),
        "{text}"
    );
    assert!(text.contains(&format!("delete Node {w}")), "{text}");
    assert_eq!(support::leftovers(&tb, 2), "", "left on {w}");
    let stayed: Vec<(String, bool)> = names[..2].iter().map(|n| (n.clone(), true)).collect();
    assert_eq!(ready_nodes(&kubeconfig).await, stayed);
    let running = tb.ssh(0, &format!("{kubectl} get pods --no-headers"));
    assert_eq!(
        running.lines().filter(|l| l.contains(" Running ")).count(),
        2,
        "{running}"
    );
    // and it can join again
    provision_ok(&["join", "-i", inv_s, "--hosts", w]);
    assert_eq!(
        ready_nodes(&kubeconfig).await,
        names.iter().map(|n| (n.clone(), true)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_control_plane_joins_etcd_serves_the_api_leaves_and_rejoins() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let tb = Testbed::up_for_kubelet(2);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let role = "      roles: [control-plane]\n";
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    // both hosts control planes
    let text = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("      roles: [worker]\n", role);
    std::fs::write(&inv, text).unwrap();
    let inv_s = inv.to_str().unwrap();
    provision_ok(&["init", "-i", inv_s]);
    let join = provision_ok(&["join", "-i", inv_s, "--output", "json"]);
    assert_eq!(join.hosts_of("etcd").len(), 1, "{}", join.text());

    let (cp1, cp2) = (&tb.machines[0], &tb.machines[1]);
    let members = tb.ssh(1, &format!("{} member list", etcdctl()));
    let started: Vec<&str> = members
        .lines()
        .filter(|l| l.contains(", started, "))
        .collect();
    assert_eq!(started.len(), 2, "{members}");
    assert!(
        members.contains(&format!(", {}, https://{}:2380,", cp2.name, cp2.address)),
        "{members}"
    );
    // the second API server answers on its own address and sees both nodes Ready
    let nodes = tb.ssh(
        1,
        &format!(
            "kubectl --kubeconfig=/etc/kubernetes/admin.conf --server=https://{}:6443 get nodes --no-headers",
            cp2.address
        ),
    );
    for m in [cp1, cp2] {
        assert!(
            nodes.lines().any(|l| l.starts_with(&m.name)
                && l.contains(" Ready ")
                && l.contains("control-plane")),
            "{nodes}"
        );
    }
    // one CA and one Secrets key for the whole control plane
    let same = "sha256sum /etc/kubernetes/pki/ca.key /etc/kubernetes/pki/etcd/ca.key /etc/kubernetes/pki/sa.key /etc/kubernetes/encryption-config.yaml";
    assert_eq!(tb.ssh(0, same), tb.ssh(1, same));
    let again = provision_ok(&["join", "-i", inv_s, "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // the second control plane leaves: its etcd member goes and the first serves alone
    let leave = provision_ok(&[
        "reset", "-i", inv_s, "--hosts", &cp2.name, "--yes", "--output", "json",
    ]);
    assert_eq!(
        leave.hosts_of("remove-etcd-member").len(),
        1,
        "{}",
        leave.text()
    );
    let members = tb.ssh(0, &format!("{} member list", etcdctl()));
    assert_eq!(members.lines().count(), 1, "{members}");
    assert!(members.contains(&format!(", {}, ", cp1.name)), "{members}");
    assert_eq!(support::leftovers(&tb, 1), "", "left on {}", cp2.name);
    let nodes = tb.ssh(
        0,
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf get nodes --no-headers",
    );
    assert!(!nodes.contains(&cp2.name), "{nodes}");
    assert!(nodes.contains(" Ready "), "{nodes}");
    // a re-run has nothing left to remove; then it joins again as a new member
    let again = provision_ok(&[
        "reset", "-i", inv_s, "--hosts", &cp2.name, "--yes", "--output", "json",
    ]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    provision_ok(&["join", "-i", inv_s]);
    let members = tb.ssh(0, &format!("{} member list", etcdctl()));
    assert_eq!(
        members
            .lines()
            .filter(|l| l.contains(", started, "))
            .count(),
        2,
        "{members}"
    );
}

fn etcdctl() -> &'static str {
    "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key"
}
