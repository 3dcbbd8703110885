//! `provision reset` of a whole cluster on two test machines (the phases that need no
//! Kubernetes binaries: certificates, bundle, containerd, the overlay, etcd): asks first,
//! a dry run changes nothing, the reset takes off everything provision put there and leaves
//! what it did not (a rule of the host's own firewall), a second reset changes nothing, and
//! `init` brings the hosts up again with a new CA.

mod support;
use support::{Testbed, leftovers, provision, provision_ok};

#[test]
fn reset_asks_first_takes_off_what_provision_installed_then_changes_nothing_and_init_works_again() {
    let tb = Testbed::up_for_kubelet(2);
    let bundle = support::testbed_bundle(tb.dir.path(), None);
    let inv = tb.inventory(&support::bundle_spec(&bundle), &[]);
    let inv_s = inv.to_str().unwrap();
    let up = || {
        let init =
            "control-plane,bootstrap,csr-approver,kubelet,kube-proxy,network-policy,addons,verify";
        provision_ok(&["init", "-i", inv_s, "--skip-phases", init]);
        let join = "control-plane,csr-approver,kubelet,kube-proxy,network-policy,verify";
        provision_ok(&["join", "-i", inv_s, "--skip-phases", join]);
    };
    up();
    let kubeconfig = tb.dir.path().join("test-admin.conf");
    assert!(kubeconfig.exists());
    let ca_before = tb.ssh(0, "sha256sum < /etc/kubernetes/pki/ca.crt");
    for i in 0..2 {
        let found = leftovers(&tb, i);
        assert!(found.contains("unit containerd active"), "{found}");
        assert!(found.contains("link provision-vx"), "{found}");
        assert!(found.contains("rule "), "{found}");
        assert!(found.contains("link /usr/local/bin/containerd"), "{found}");
    }
    assert!(leftovers(&tb, 0).contains("unit etcd active"));
    // the host's own firewall rule (it matches a documentation address; no traffic is sent)
    let own_rule = "INPUT -s 192.0.2.7/32 -m comment --comment host-own-rule -j DROP";
    tb.ssh(1, &format!("iptables -A {own_rule}"));

    // without --yes and without a terminal to ask on, nothing happens
    let refused = provision(&["reset", "-i", inv_s]);
    assert_eq!(refused.code, 2, "{}", refused.text());
    assert!(refused.stderr.contains("--yes"), "{}", refused.text());
    assert!(
        refused.stderr.contains("the whole cluster goes"),
        "{}",
        refused.text()
    );
    // the only control plane leaves only with everyone
    let first = tb.machines[0].name.as_str();
    let alone = provision(&["reset", "-i", inv_s, "--hosts", first, "--yes"]);
    assert_eq!(alone.code, 2, "{}", alone.text());
    assert!(
        alone.stderr.contains("every control plane would leave"),
        "{}",
        alone.text()
    );

    // a dry run lists the changes and makes none
    let dry = provision_ok(&["reset", "-i", inv_s, "--dry-run", "--output", "json"]);
    assert!(dry.changes() > 20, "{}", dry.text());
    let text = dry.text();
    assert!(text.contains("remove directory /var/lib/etcd"), "{text}");
    assert!(text.contains("stop etcd.service"), "{text}");
    assert!(text.contains("would remove"), "{text}");
    assert!(leftovers(&tb, 0).contains("unit etcd active"));
    assert!(kubeconfig.exists());

    let reset = provision_ok(&["reset", "-i", inv_s, "--yes", "--output", "json"]);
    assert_eq!(reset.hosts_of("cleanup").len(), 2, "{}", reset.text());
    for i in 0..2 {
        assert_eq!(leftovers(&tb, i), "", "left on {}", tb.machines[i].name);
        // a disk mounted at a state directory stays mounted, emptied
        assert_eq!(
            tb.ssh(i, "mountpoint /var/lib/containerd").trim(),
            "/var/lib/containerd is a mountpoint"
        );
    }
    assert!(
        tb.ssh(1, "iptables-save").contains("host-own-rule"),
        "reset removed a rule that was not provision's"
    );
    assert!(!kubeconfig.exists(), "the local admin kubeconfig stayed");
    // the drain and Node phases are for hosts leaving a cluster that stays
    assert!(reset.hosts_of("drain").is_empty(), "{}", reset.text());

    let again = provision_ok(&["reset", "-i", inv_s, "--yes", "--output", "json"]);
    assert_eq!(again.changes(), 0, "{}", again.text());

    // the hosts take a new cluster: a new CA, etcd healthy, the overlay back
    up();
    assert_ne!(
        tb.ssh(0, "sha256sum < /etc/kubernetes/pki/ca.crt"),
        ca_before
    );
    assert!(leftovers(&tb, 0).contains("unit etcd active"));
    assert!(leftovers(&tb, 1).contains("link provision-vx"));
    assert!(kubeconfig.exists());
}
