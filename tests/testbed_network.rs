//! The built-in pod network without Kubernetes: the `cni` phase configures each machine, then the
//! test creates pod network namespaces through the CNI plugins with the configuration the phase
//! wrote, exactly as a runtime would, and checks the network contract: pods reach pods across
//! every pair of machines through the VXLAN overlay, the receiver sees the sender pod's own
//! address (no NAT), the overlay comes back after a reboot, and adding a machine updates the
//! others.

mod support;
use std::path::Path;
use support::{Testbed, provision};

/// The inventory of the first `n` machines (a control plane, then workers), VXLAN overlay.
fn inventory(tb: &Testbed, n: usize) -> std::path::PathBuf {
    let full = std::fs::read_to_string(tb.inventory("", &[])).unwrap();
    let (head, hosts) = full.split_at(full.find("    - name:").unwrap());
    let kept: Vec<String> = hosts
        .split("    - name:")
        .filter(|b| !b.is_empty())
        .take(n)
        .map(|b| format!("    - name:{b}"))
        .collect();
    let path = tb.dir.path().join(format!("network-{n}.yaml"));
    std::fs::write(&path, format!("{head}{}", kept.concat())).unwrap();
    path
}

fn cni(inv: &Path) -> (support::Run, support::Run) {
    let inv = inv.to_str().unwrap();
    let init = provision(&["init", "phase", "cni", "-i", inv, "--output", "json"]);
    assert_eq!(init.code, 0, "{}", init.text());
    let join = provision(&["join", "phase", "cni", "-i", inv, "--output", "json"]);
    assert_eq!(join.code, 0, "{}", join.text());
    (init, join)
}

/// A pod network namespace on machine `i`, made by the bridge plugin with the first plugin of
/// the conflist the phase wrote (Debian's plugins; no cnitool). Returns the pod's address.
fn pod(tb: &Testbed, i: usize, name: &str) -> String {
    let conflist: serde_json::Value =
        serde_json::from_str(&tb.ssh(i, "cat /etc/cni/net.d/10-provision.conflist")).unwrap();
    let mut bridge = conflist["plugins"][0].clone();
    bridge["cniVersion"] = conflist["cniVersion"].clone();
    bridge["name"] = conflist["name"].clone();
    let out = tb.ssh(
        i,
        &format!(
            "echo '{bridge}' > /tmp/{name}.json && \
             {{ CNI_COMMAND=DEL CNI_CONTAINERID={name} CNI_NETNS=/var/run/netns/{name} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
               /usr/lib/cni/bridge < /tmp/{name}.json >/dev/null 2>&1 || true; }} && \
             {{ ip netns del {name} 2>/dev/null || true; }} && ip netns add {name} && ip netns exec {name} ip link set lo up && \
             CNI_COMMAND=ADD CNI_CONTAINERID={name} CNI_NETNS=/var/run/netns/{name} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
             /usr/lib/cni/bridge < /tmp/{name}.json"
        ),
    );
    let result: serde_json::Value = serde_json::from_str(&out).expect("CNI result");
    let addr = result["ips"][0]["address"].as_str().expect("an address");
    addr.split('/').next().unwrap().to_string()
}

fn ping(tb: &Testbed, i: usize, from: &str, to: &str) {
    let out = tb.ssh_output(i, &format!("ip netns exec {from} ping -c 1 -W 3 {to}"));
    assert!(
        out.status.success(),
        "{from} on {} cannot reach {to}: {}\nroutes: {}",
        tb.machines[i].name,
        String::from_utf8_lossy(&out.stdout),
        tb.ssh(
            i,
            "ip route; ip neigh show dev provision-vx; bridge fdb show dev provision-vx"
        )
    );
}

#[test]
fn pods_reach_pods_across_machines_without_nat_after_reboot_and_when_a_machine_joins() {
    let tb = Testbed::up(3);
    let two = inventory(&tb, 2);
    let (init, join) = cni(&two);
    assert!(init.changes() > 0 && join.changes() > 0);
    for i in 0..2 {
        let link = tb.ssh(i, "ip -d link show provision-vx");
        assert!(
            link.contains("vxlan id 1 ") && link.contains("dstport 4789"),
            "{link}"
        );
        // the overlay's MTU leaves room for the VXLAN header
        let mtu: u32 = tb
            .ssh(i, "cat /sys/class/net/provision-vx/mtu")
            .trim()
            .parse()
            .unwrap();
        let host_mtu: u32 = tb
            .ssh(i, "cat /sys/class/net/host0/mtu")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(mtu, host_mtu - 50);
    }
    let (a, b) = (pod(&tb, 0, "pa"), pod(&tb, 1, "pb"));
    assert!(a.starts_with("10.88.") && b.starts_with("10.88.") && a != b);
    ping(&tb, 0, "pa", &b);
    ping(&tb, 1, "pb", &a);

    // the receiving pod sees the sending pod's own address: no NAT on the way
    tb.ssh(
        1,
        "rm -f /tmp/cap; setsid sh -c \"timeout 8 ip netns exec pb tcpdump -l -n -c 1 -i eth0 'icmp[icmptype] == icmp-echo' > /tmp/cap 2>/dev/null\" >/dev/null 2>&1 < /dev/null & sleep 1.5",
    );
    ping(&tb, 0, "pa", &b);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cap = tb.ssh(1, "cat /tmp/cap");
    assert!(
        cap.contains(&format!("IP {a} > {b}: ICMP echo request")),
        "capture: {cap}"
    );

    // nothing to change on a second run
    let (init2, join2) = cni(&two);
    assert_eq!(
        init2.changes() + join2.changes(),
        0,
        "{}{}",
        init2.text(),
        join2.text()
    );

    // a reboot: the overlay and the routes come back by themselves
    let _ = tb.ssh_output(1, "systemctl reboot");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    while !tb
        .ssh_output(1, "ip -d link show provision-vx")
        .status
        .success()
    {
        assert!(
            started.elapsed().as_secs() < 90,
            "the overlay did not come back"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let b = pod(&tb, 1, "pb");
    ping(&tb, 1, "pb", &a);
    ping(&tb, 0, "pa", &b);

    // a third machine joins: `join` alone also teaches the other two its routes
    let three = inventory(&tb, 3);
    let join3 = provision(&[
        "join",
        "phase",
        "cni",
        "-i",
        three.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(join3.code, 0, "{}", join3.text());
    let changed: Vec<String> = join3
        .hosts_of("cni")
        .iter()
        .filter(|h| !h["changes"].as_array().unwrap().is_empty())
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changed.len(), 3, "every machine changes: {}", join3.text());
    let c = pod(&tb, 2, "pc");
    for (i, from) in [(0, "pa"), (1, "pb")] {
        ping(&tb, i, from, &c);
    }
    ping(&tb, 2, "pc", &a);
    ping(&tb, 2, "pc", &b);
}
