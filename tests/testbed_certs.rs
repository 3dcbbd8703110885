//! Certificates that never expire silently: `certs check-expiration` covers every node's
//! kubelet certificates and warns before expiry, and a kubelet that rotates its serving
//! certificate gets the new one approved on the control plane without any provision run, and
//! serves with it (`kubectl logs` works). Then the whole cluster is shut down past the expiry
//! of every certificate but the CAs: `certs renew all` brings it back offline, from the CA.
//! Real-cluster tier: needs the upstream builds.

mod support;
use std::time::{Duration, Instant};
use support::{Testbed, provision, provision_ok};

const ADMIN: &str = "kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s";
const SERVING: &str = "/var/lib/kubelet/pki/kubelet-server-current.pem";

/// Polls `check` every 2 s for up to `seconds`; its first Some.
fn within<T>(seconds: u64, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        if let Some(t) = check() {
            return Some(t);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    None
}

/// The serial of the certificate the kubelet at `address` serves on its port, seen from here.
fn served_serial(address: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | timeout 10 openssl s_client -connect {address}:10250 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn kubelet_serving_certificates_rotate_approved_without_provision_and_expiry_is_never_silent() {
    let Some(upstream) = support::upstream_or_skip("real-cluster test") else {
        return;
    };
    let tb = Testbed::up_for_kubelet(2);
    let bundle = support::testbed_bundle(tb.dir.path(), Some(&upstream));
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    let inv_s = inv.to_str().expect("a UTF-8 path");
    let (cp, worker) = (tb.machines[0].name.as_str(), tb.machines[1].name.as_str());
    let worker_address = tb.machines[1].address.clone();
    provision_ok(&["init", "-i", inv_s]);
    provision_ok(&["join", "-i", inv_s]);
    assert_eq!(
        tb.ssh(0, "systemctl is-active provision-csr-approver")
            .trim(),
        "active"
    );

    // admin.conf's rights come from one binding. Deleted, admin is refused; a re-run of init's
    // bootstrap makes it again as super-admin and goes on as admin in the same run, however soon
    // the authorizer sees the new binding
    let unbind = "kubectl --kubeconfig=/etc/kubernetes/super-admin.conf delete clusterrolebinding kubeadm:cluster-admins";
    for _ in 0..3 {
        tb.ssh(0, unbind);
        let refused = tb.ssh(0, &format!("{ADMIN} get nodes 2>&1 || true"));
        assert!(refused.contains("forbidden"), "{refused}");
        let again = provision_ok(&["init", "phase", "bootstrap", "-i", inv_s, "-v"]);
        assert!(
            again
                .stdout
                .contains("create ClusterRoleBinding kubeadm:cluster-admins"),
            "{}",
            again.text()
        );
        assert_eq!(
            tb.ssh(0, &format!("{ADMIN} get nodes -o name"))
                .lines()
                .count(),
            2
        );
    }

    // every certificate has a row, the kubelets' on every node included; with a window of 400
    // days every leaf is named with what to do, and the exit code says so
    let table = provision_ok(&["certs", "check-expiration", "-i", inv_s]);
    for row in ["kubelet-client", "kubelet-serving", "kube-proxy.conf"] {
        assert_eq!(
            table
                .stdout
                .lines()
                .filter(|l| l.trim_start().starts_with(&format!("{row} ")))
                .count(),
            2,
            "{row} on both nodes:\n{}",
            table.stdout
        );
    }
    let warned = provision(&[
        "certs",
        "check-expiration",
        "-i",
        inv_s,
        "--warn-within",
        "400d",
    ]);
    assert_eq!(warned.code, 1, "{}", warned.text());
    let leaves_of_cp = [
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-client",
        "etcd-server",
        "etcd-peer",
        "etcd-healthcheck-client",
        "apiserver-etcd-client",
        "admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "kube-proxy.conf",
        "kubelet-client",
        "kubelet-serving",
    ];
    for leaf in leaves_of_cp {
        assert!(
            warned
                .stderr
                .contains(&format!("warning: {cp}: {leaf} expires")),
            "{leaf}:\n{}",
            warned.stderr
        );
    }
    for leaf in ["kube-proxy.conf", "kubelet-client", "kubelet-serving"] {
        assert!(
            warned
                .stderr
                .contains(&format!("warning: {worker}: {leaf} expires")),
            "{leaf}:\n{}",
            warned.stderr
        );
    }
    // the CAs (10 years) are outside the window
    assert!(!warned.stderr.contains(": ca expires"), "{}", warned.stderr);

    // a pod on the worker whose logs are read through its kubelet
    let image = format!(
        "registry.k8s.io/e2e-test-images/busybox:{}",
        support::bundle_version(&bundle, "busybox")
    );
    tb.ssh(
        0,
        &format!(
            "{ADMIN} run talker --image={image} --restart=Never \
             --overrides='{{\"spec\":{{\"nodeName\":\"{worker}\"}}}}' -- sh -c 'echo said-before; sleep 3600' && \
             {ADMIN} wait --for=condition=Ready pod/talker --timeout=120s"
        ),
    );

    // the test cluster's signer issues 2-minute certificates from now on (a flag the test sets
    // on kube-controller-manager), and the worker's kubelet asks for a new serving certificate
    let unit = "/etc/systemd/system/kube-controller-manager.service";
    tb.ssh(
        0,
        &format!(
            "sed -i '/^ExecStart=.*kube-controller-manager/a\\  --cluster-signing-duration=2m \\\\' {unit} && \
             systemctl daemon-reload && systemctl restart kube-controller-manager"
        ),
    );
    tb.ssh(
        1,
        "rm -f /var/lib/kubelet/pki/kubelet-server-*.pem && systemctl restart kubelet",
    );
    let serial = |i: usize| {
        let out = tb.ssh_output(
            i,
            &format!("openssl x509 -noout -serial -enddate -in {SERVING}"),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // what the control plane and the worker say, for a failure's message
    let diagnose = || {
        let cp_side = tb.ssh_output(
            0,
            &format!(
                "{ADMIN} get csr; journalctl -u provision-csr-approver --no-pager | tail -n 20; \
                 journalctl -u kube-controller-manager --no-pager | grep -i -e csr -e sign | tail -n 10"
            ),
        );
        let worker_side = tb.ssh_output(
            1,
            "journalctl -u kubelet --no-pager | grep -i -e certif -e csr | tail -n 10",
        );
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&cp_side.stdout),
            String::from_utf8_lossy(&worker_side.stdout)
        )
    };
    let first = within(90, || serial(1))
        .unwrap_or_else(|| panic!("the worker got no serving certificate:\n{}", diagnose()));
    let first_serial = first.lines().next().unwrap_or_default().to_string();
    // valid for minutes, not a year: the short signer issued it
    let not_after = tb.ssh(
        1,
        &format!("date -d \"$(openssl x509 -noout -enddate -in {SERVING} | cut -d= -f2)\" +%s"),
    );
    let now = tb.ssh(1, "date +%s");
    let left: i64 =
        not_after.trim().parse::<i64>().unwrap_or(0) - now.trim().parse::<i64>().unwrap_or(0);
    assert!(left > 0 && left <= 180, "{first}: {left} s left");

    // the kubelet rotates it before it expires (at 70 to 90 % of its life): approved by the
    // control plane's approver, no provision running
    let rotated = within(240, || {
        serial(1).and_then(|s| {
            let now = s.lines().next().unwrap_or_default().to_string();
            (now != first_serial).then_some(now)
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "the kubelet did not rotate its serving certificate within 4 minutes:\n{}",
            diagnose()
        )
    });
    let approved = tb.ssh(
        0,
        &format!(
            "{ADMIN} get csr -o jsonpath='{{range .items[*]}}{{.spec.username}} {{.spec.signerName}} {{.status.conditions[0].message}}{{\"\\n\"}}{{end}}'"
        ),
    );
    let by_approver = approved
        .lines()
        .filter(|l| {
            l.starts_with(&format!(
                "system:node:{worker} kubernetes.io/kubelet-serving"
            )) && l.contains("checked by provision's approver")
        })
        .count();
    assert!(by_approver >= 2, "{approved}");

    // the kubelet serves the certificate it holds now (the rotated one, or a later one), and
    // logs are read through it
    let serving_now = within(60, || {
        let held = serial(1)?
            .lines()
            .next()?
            .trim_start_matches("serial=")
            .to_string();
        (held != first_serial.trim_start_matches("serial=")
            && served_serial(&worker_address).ends_with(&held))
        .then_some(held)
    });
    assert!(
        serving_now.is_some(),
        "the kubelet serves {} after rotating to {rotated}",
        served_serial(&worker_address)
    );
    let logs = tb.ssh(0, &format!("{ADMIN} logs talker"));
    assert!(logs.contains("said-before"), "{logs}");

    // the whole cluster shut down past the expiry of every certificate but the CAs, then
    // powered on: nothing can talk to anything; `certs renew all` brings it back from the CA
    tb.ssh(
        0,
        "systemctl stop kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd",
    );
    tb.ssh(1, "systemctl stop kubelet kube-proxy");
    let ca_crt = tb.ssh(0, "cat /etc/kubernetes/pki/ca.crt");
    let ca_key = tb.ssh(0, "cat /etc/kubernetes/pki/ca.key");
    tb.ssh(0, EXPIRE_ALL);
    // the worker's own certificates are signed by the cluster CA, brought for the occasion
    tb.ssh(
        1,
        &format!(
            "mkdir -p /tmp/ca && cat > /tmp/ca/ca.crt <<'EOF'\n{ca_crt}\nEOF\ncat > /tmp/ca/ca.key <<'EOF'\n{ca_key}\nEOF\nCAS=/tmp/ca/ca {EXPIRE_ALL}; rm -r /tmp/ca"
        ),
    );
    // powered on: systemd queues the units' starts, as at boot, and nobody waits for them (the
    // API server's start fails, its certificates expired, and Restart= tries it again)
    tb.ssh(
        0,
        "systemctl start --no-block etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy",
    );
    tb.ssh(1, "systemctl start --no-block kubelet kube-proxy");
    let within_a_day = || {
        provision(&[
            "certs",
            "check-expiration",
            "-i",
            inv_s,
            "--warn-within",
            "1d",
        ])
    };
    let expired = within_a_day();
    assert_eq!(expired.code, 1, "{}", expired.text());
    for (host, leaf) in [
        (cp, "apiserver"),
        (cp, "etcd-server"),
        (worker, "kubelet-client"),
        (worker, "kube-proxy.conf"),
    ] {
        assert!(
            expired
                .stderr
                .contains(&format!("warning: {host}: {leaf} expired")),
            "{host} {leaf}:\n{}",
            expired.stderr
        );
    }
    let refused = tb.ssh_output(0, &format!("{ADMIN} get nodes"));
    assert!(
        !refused.status.success(),
        "the API answered with expired certificates"
    );

    let renewed = provision(&["certs", "renew", "all", "-i", inv_s]);
    assert_eq!(renewed.code, 0, "{}", renewed.text());
    let nodes = within(120, || {
        let out = tb.ssh_output(0, &format!("{ADMIN} get nodes --no-headers"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.lines().filter(|l| l.contains(" Ready ")).count() == 2).then_some(text)
    });
    assert!(
        nodes.is_some(),
        "the nodes are not Ready after the renewal:\n{}",
        renewed.text()
    );
    // the API server reaches the worker's kubelet with its renewed client certificate (once
    // the kubelet, bootstrapped again, authorizes it through the API)
    let logs = within(60, || {
        let out = tb.ssh_output(0, &format!("{ADMIN} logs talker"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("said-before").then_some(text)
    });
    assert!(
        logs.is_some(),
        "kubectl logs through the renewed kubelet: {}\n{}",
        String::from_utf8_lossy(&tb.ssh_output(0, &format!("{ADMIN} logs talker")).stderr),
        String::from_utf8_lossy(
            &tb.ssh_output(1, "journalctl -u kubelet --no-pager | tail -n 30")
                .stdout
        )
    );
    let fresh = within_a_day();
    for leaf in ["apiserver", "etcd-server", "admin.conf", "kube-proxy.conf"] {
        assert!(
            !fresh.stderr.contains(&format!(": {leaf} expired")),
            "{leaf}:\n{}",
            fresh.stderr
        );
    }
    // one certificate renewed: what reads it restarts, nothing else
    let one = provision_ok(&[
        "certs",
        "renew",
        "apiserver",
        "-i",
        inv_s,
        "--output",
        "json",
    ]);
    let restarts: Vec<String> = one
        .events()
        .iter()
        .filter(|e| e["event"] == "host")
        .flat_map(|e| {
            e["result"]["changes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.as_str().map(String::from))
        .filter(|c| c.starts_with("restart "))
        .collect();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0]
            .starts_with("restart kube-apiserver.service (/etc/kubernetes/pki/apiserver.crt"),
        "{restarts:?}"
    );
}

/// Shell that re-signs every certificate of a stopped host to expire at once (`-days 0`): the
/// leaves under /etc/kubernetes/pki (each by the CA that issued it), the client certificates in
/// /etc/kubernetes/*.conf and the kubelet's own. `$CAS` lists the CAs (path without .crt/.key).
const EXPIRE_ALL: &str = r#"CAS=${CAS:-"/etc/kubernetes/pki/ca /etc/kubernetes/pki/front-proxy-ca /etc/kubernetes/pki/etcd/ca"}
subject() { openssl x509 -noout -subject -in "$1" | sed 's/^subject=//'; }
issuer() { openssl x509 -noout -issuer -in "$1" | sed 's/^issuer=//'; }
# re-sign certificate $1 (key $2) by the CA that issued it, into $3
resign() {
  for ca in $CAS; do
    if [ "$(issuer "$1")" = "$(subject "$ca.crt")" ]; then
      openssl x509 -x509toreq -copy_extensions copyall -in "$1" -signkey "$2" -out /tmp/r.csr 2>/dev/null
      openssl x509 -req -days 0 -copy_extensions copyall -in /tmp/r.csr -CA "$ca.crt" -CAkey "$ca.key" -set_serial "0x$(openssl rand -hex 8)" -out "$3" 2>/dev/null
      return 0
    fi
  done
  echo "no CA for $1" >&2; return 1
}
for crt in $(find /etc/kubernetes/pki -name '*.crt' 2>/dev/null); do
  [ "$(subject "$crt")" = "$(issuer "$crt")" ] && continue
  resign "$crt" "${crt%.crt}.key" "$crt"
done
for conf in /etc/kubernetes/*.conf; do
  grep -q client-certificate-data "$conf" || continue
  old=$(awk '/client-certificate-data/ {print $2}' "$conf")
  echo "$old" | base64 -d > /tmp/c.crt
  awk '/client-key-data/ {print $2}' "$conf" | base64 -d > /tmp/c.key
  resign /tmp/c.crt /tmp/c.key /tmp/n.crt
  sed -i "s|$old|$(base64 -w0 /tmp/n.crt)|" "$conf"
done
pem=$(readlink -f /var/lib/kubelet/pki/kubelet-client-current.pem)
resign "$pem" "$pem" /tmp/n.crt
{ cat /tmp/n.crt; sed -n '/PRIVATE KEY-----/,$p' "$pem"; } > /tmp/n.pem && cat /tmp/n.pem > "$pem"
rm -f /tmp/r.csr /tmp/c.crt /tmp/c.key /tmp/n.crt /tmp/n.pem
sleep 1"#;
