//! The PKI on real machines: kept on re-runs, re-issued only where needed, accepted by Debian's
//! etcd, etcdctl and kubectl, and never printed.

mod support;
use std::collections::BTreeMap;
use support::{Testbed, provision};

fn init(inv: &std::path::Path, extra: &[&str]) -> support::Run {
    let mut args = vec![
        "init",
        "-i",
        inv.to_str().unwrap(),
        "--skip-phases",
        support::SKIP_PREFLIGHT_AND_CLUSTER,
    ];
    args.extend_from_slice(extra);
    provision(&args)
}

/// sha256 of every file under /etc/kubernetes, by path.
fn snapshot(tb: &Testbed) -> BTreeMap<String, String> {
    tb.ssh(
        0,
        "cd /etc/kubernetes && find . -type f | sort | xargs sha256sum",
    )
    .lines()
    .filter_map(|l| {
        l.split_once("  ")
            .map(|(h, p)| (p.trim_start_matches("./").to_string(), h.to_string()))
    })
    .collect()
}

fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn client_cert(tb: &Testbed, file: &str) -> String {
    let text = tb.ssh(0, &format!("cat /etc/kubernetes/{file}"));
    provision::pki::kubeconfig::parse(&text).unwrap().cert_pem
}

#[test]
fn certificates_are_kept_and_reissued_only_where_needed() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &[]);
    let first = init(&inv, &["--output", "json"]);
    assert_eq!(first.code, 0, "{}", first.text());
    let s1 = snapshot(&tb);
    // 22 PKI files, 6 kubeconfigs (kube-proxy.conf included)
    assert_eq!(s1.len(), 28, "{s1:?}");

    let again = init(&inv, &["--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());
    assert_eq!(snapshot(&tb), s1);

    // a new endpoint: only the API server certificate is re-issued; kubeconfigs that point at the
    // endpoint get the new server with their old client certificates
    let admin_cert = client_cert(&tb, "admin.conf");
    let moved = tb.inventory("  controlPlaneEndpoint: api.testbed.example:6443\n", &[]);
    let r = init(&moved, &["--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let s2 = snapshot(&tb);
    assert_eq!(
        changed(&s1, &s2),
        [
            "admin.conf",
            "kube-proxy.conf",
            "kubelet.conf",
            "pki/apiserver.crt",
            "pki/apiserver.key",
            "super-admin.conf"
        ],
    );
    assert_eq!(client_cert(&tb, "admin.conf"), admin_cert);
    let notes = r.hosts_of("certs/apiserver")[0]["notes"].to_string();
    assert!(notes.contains("api.testbed.example"), "{notes}");
    let check = tb.ssh(
        0,
        "openssl x509 -in /etc/kubernetes/pki/apiserver.crt -noout -checkhost api.testbed.example",
    );
    assert!(check.contains("does match"), "{check}");
    assert!(
        tb.ssh(0, "grep server: /etc/kubernetes/admin.conf")
            .contains("https://api.testbed.example:6443")
    );

    // one leaf deleted: only that leaf comes back, signed by the same CA
    tb.ssh(0, "rm /etc/kubernetes/pki/etcd/peer.crt");
    let r = init(&moved, &["--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let s3 = snapshot(&tb);
    assert_eq!(
        changed(&s2, &s3),
        ["pki/etcd/peer.crt", "pki/etcd/peer.key"]
    );
    let v = tb.ssh(
        0,
        "cd /etc/kubernetes/pki/etcd && openssl verify -CAfile ca.crt peer.crt",
    );
    assert!(v.contains("peer.crt: OK"), "{v}");

    // a key made readable by all and a kubeconfig replaced by a link: the mode is set back
    // and the link replaced by the file, with nothing re-issued, and the next run is a no-op
    tb.ssh(
        0,
        "chmod 644 /etc/kubernetes/pki/apiserver.key && \
         mv /etc/kubernetes/scheduler.conf /root/scheduler.conf && \
         ln -s /root/scheduler.conf /etc/kubernetes/scheduler.conf",
    );
    let r = init(&moved, &["--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(r.changes(), 2, "{}", r.text());
    assert_eq!(
        tb.ssh(
            0,
            "stat -c '%a %U' /etc/kubernetes/pki/apiserver.key; stat -c %F /etc/kubernetes/scheduler.conf"
        ),
        "600 root\nregular file\n"
    );
    assert_eq!(snapshot(&tb), s3);
    let again = init(&moved, &["--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // renewal on request, of that one certificate only
    let r = provision(&["certs", "renew", "apiserver", "-i", moved.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(
        changed(&s3, &snapshot(&tb)),
        ["pki/apiserver.crt", "pki/apiserver.key"]
    );
    let r = provision(&["certs", "renew", "ca", "-i", moved.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.text());

    let table = provision(&["certs", "check-expiration", "-i", moved.to_str().unwrap()]);
    assert_eq!(table.code, 0, "{}", table.text());
    for name in ["apiserver ", "etcd-peer ", "admin.conf ", "etcd-ca "] {
        let row = table
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{}", table.stdout));
        assert!(row.contains("d ") || row.contains("y "), "{row}");
    }
}

#[test]
fn etcd_and_kubectl_accept_the_generated_credentials() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &[]);
    // another cluster's kubeconfig where ours goes: refused, and left as it was
    let local = tb.dir.path().join("test-admin.conf");
    let foreign = "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://10.0.0.1:6443, certificate-authority-data: b3RoZXI=}\nusers:\n- name: u\n  user: {client-certificate-data: eA==, client-key-data: eA==}\n";
    std::fs::write(&local, foreign).unwrap();
    let r = init(&inv, &[]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(
        r.stdout.contains("holds a kubeconfig of another cluster"),
        "{}",
        r.stdout
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), foreign);
    std::fs::remove_file(&local).unwrap();
    let r = init(&inv, &[]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout
            .contains(&format!("admin kubeconfig written to {}", local.display())),
        "{}",
        r.stdout
    );
    let m = &tb.machines[0];
    let ip = &m.address;
    let p = "/etc/kubernetes/pki/etcd";
    tb.ssh(
        0,
        &format!(
            "systemd-run --unit etcd-test /usr/bin/etcd --name {name} --data-dir /var/lib/etcd-test \
             --listen-client-urls https://{ip}:2379 --advertise-client-urls https://{ip}:2379 \
             --listen-peer-urls https://{ip}:2380 --initial-advertise-peer-urls https://{ip}:2380 \
             --initial-cluster {name}=https://{ip}:2380 \
             --cert-file {p}/server.crt --key-file {p}/server.key --client-cert-auth --trusted-ca-file {p}/ca.crt \
             --peer-cert-file {p}/peer.crt --peer-key-file {p}/peer.key --peer-client-cert-auth --peer-trusted-ca-file {p}/ca.crt",
            name = m.name
        ),
    );
    let etcdctl = |cert: &str| {
        format!(
            "ETCDCTL_API=3 etcdctl --endpoints https://{ip}:2379 --cacert {p}/ca.crt {cert} --command-timeout=3s"
        )
    };
    let hc = format!("--cert {p}/healthcheck-client.crt --key {p}/healthcheck-client.key");
    tb.ssh(
        0,
        &format!(
            "for i in $(seq 100); do {} endpoint health && exit 0; sleep 0.2; done; exit 1",
            etcdctl(&hc)
        ),
    );
    tb.ssh(0, &format!("{} put provision ok", etcdctl(&hc)));
    let got = tb.ssh(
        0,
        &format!("{} get provision --print-value-only", etcdctl(&hc)),
    );
    assert_eq!(got.trim(), "ok");
    let api = "--cert /etc/kubernetes/pki/apiserver-etcd-client.crt --key /etc/kubernetes/pki/apiserver-etcd-client.key";
    assert_eq!(
        tb.ssh(
            0,
            &format!("{} get provision --print-value-only", etcdctl(api))
        )
        .trim(),
        "ok"
    );
    // no client certificate, or one from another CA: refused
    let none = tb.ssh_output(0, &format!("{} get provision", etcdctl("")));
    assert!(
        !none.status.success(),
        "etcd answered a client without a certificate"
    );
    let other = "--cert /etc/kubernetes/pki/front-proxy-client.crt --key /etc/kubernetes/pki/front-proxy-client.key";
    let refused = tb.ssh_output(0, &format!("{} get provision", etcdctl(other)));
    assert!(
        !refused.status.success(),
        "etcd accepted a certificate from the front-proxy CA"
    );

    // Debian's kubectl reads every kubeconfig: user, cluster and server as kubeadm writes them
    let server = format!("https://{ip}:6443");
    for (file, user) in [
        ("admin.conf", "kubernetes-admin".to_string()),
        ("super-admin.conf", "kubernetes-super-admin".into()),
        (
            "controller-manager.conf",
            "system:kube-controller-manager".into(),
        ),
        ("scheduler.conf", "system:kube-scheduler".into()),
        ("kubelet.conf", format!("system:node:{}", m.name)),
    ] {
        let view = tb.ssh(
            0,
            &format!(
                "kubectl --kubeconfig /etc/kubernetes/{file} config view -o jsonpath='{{.users[0].name}} {{.contexts[0].context.cluster}} {{.clusters[0].cluster.server}} {{.current-context}}'"
            ),
        );
        assert_eq!(view, format!("{user} test {server} {user}@test"), "{file}");
    }
    // the operator's copy is the host's admin.conf
    let local = std::fs::read_to_string(tb.dir.path().join("test-admin.conf")).unwrap();
    assert_eq!(local, tb.ssh(0, "cat /etc/kubernetes/admin.conf"));
}

#[test]
fn no_private_key_or_token_is_ever_printed() {
    let tb = Testbed::up(1);
    let inv = tb.inventory("", &[]);
    let mut output = String::new();
    for args in [
        vec!["--dry-run", "-v"],
        vec!["-v"],
        vec!["-v", "--dry-run"],
        vec!["--output", "json", "-v"],
    ] {
        let r = init(&inv, &args);
        assert_eq!(r.code, 0, "{}", r.text());
        output.push_str(&r.text());
    }
    let r = provision(&["certs", "renew", "all", "-v", "-i", inv.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.text());
    output.push_str(&r.text());
    assert!(!output.contains("PRIVATE KEY"), "a key header was printed");
    // every line of every key and kubeconfig key on the host, searched for in the output
    let keys = tb.ssh(0, "cat /etc/kubernetes/pki/*.key /etc/kubernetes/pki/etcd/*.key; grep client-key-data /etc/kubernetes/*.conf");
    for line in keys
        .lines()
        .map(|l| l.trim().trim_start_matches("client-key-data:").trim())
    {
        if line.len() >= 20 && !line.starts_with("-----") {
            assert!(!output.contains(line), "key material printed: {line}");
        }
    }
    // the local kubeconfig is private to its owner
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tb.dir.path().join("test-admin.conf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn an_external_ca_is_used_and_a_keyless_one_is_never_signed_with() {
    let tb = Testbed::up(1);
    let dir = tb.dir.path();
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "400",
        ])
        .args([
            "-subj",
            "/CN=corp-kubernetes-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ])
        .args(["-addext", "keyUsage=critical,keyCertSign,digitalSignature"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.crt"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let with_key = tb.inventory(
        "  pki:\n    externalCA: {certFile: ca.crt, keyFile: ca.key}\n",
        &[],
    );
    let r = init(&with_key, &[]);
    assert_eq!(r.code, 0, "{}", r.text());
    let given = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    assert_eq!(tb.ssh(0, "cat /etc/kubernetes/pki/ca.crt"), given);
    let v = tb.ssh(
        0,
        "cd /etc/kubernetes/pki && openssl verify -CAfile ca.crt apiserver.crt",
    );
    assert!(v.contains("apiserver.crt: OK"), "{v}");

    // without the key: leaves already in place are checked and kept; a missing one is an error
    let keyless = tb.inventory("  pki:\n    externalCA: {certFile: ca.crt}\n", &[]);
    let r = init(&keyless, &["--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(
        r.changes(),
        0,
        "compliant leaves were replaced: {}",
        r.text()
    );
    tb.ssh(0, "rm /etc/kubernetes/pki/apiserver.crt");
    let r = init(&keyless, &[]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stdout.contains("externally managed"), "{}", r.stdout);
    let report = provision(&["certs", "check-expiration", "-i", keyless.to_str().unwrap()]);
    let row = report
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("apiserver-kubelet-client"))
        .unwrap_or_default();
    assert!(row.trim_end().ends_with("yes"), "{}", report.stdout);
}
