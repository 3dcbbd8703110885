//! Preflight on real machines: passes on healthy hosts; a bad host fails with the named check,
//! on that host only; `--ignore-preflight-errors` lets it through; another installation's
//! drop-in that replaces a unit's command is refused, and so is a CNI configuration that
//! would come before the cluster's own.

mod support;
use support::{Testbed, provision};

#[test]
fn preflight_names_the_failing_check_on_the_bad_host_only() {
    let tb = Testbed::up(3);
    let inv = tb.inventory("", &[]);
    let inv = inv.to_str().unwrap();
    let preflight = |extra: &[&str]| {
        let mut args = vec!["init", "phase", "preflight", "-i", inv, "--output", "json"];
        args.extend_from_slice(extra);
        provision(&args)
    };

    let ok = preflight(&[]);
    assert_eq!(ok.code, 0, "{}", ok.text());
    let hosts = ok.hosts_of("preflight");
    assert_eq!(hosts.len(), 3, "{}", ok.text());
    assert!(hosts.iter().all(|h| h["status"] == "ok"), "{}", ok.text());

    // Machine 1: swap "on" (a file bound over /proc/swaps: real swap would be the whole CI
    // kernel's). Machine 2: port 10250 taken by another program.
    tb.ssh(
        1,
        "printf 'Filename\\tType\\tSize\\tUsed\\tPriority\\n/swapfile file 1048572 0 -2\\n' > /run/fake-swaps \
         && mount --bind /run/fake-swaps /proc/swaps",
    );
    tb.ssh(
        2,
        "systemd-run --unit squatter socat TCP-LISTEN:10250,fork,reuseaddr EXEC:/bin/true \
         && for i in $(seq 50); do ss -ltnH | grep -q ':10250 ' && exit 0; sleep 0.1; done; exit 1",
    );

    let bad = preflight(&[]);
    assert_eq!(bad.code, 1, "{}", bad.text());
    let hosts = bad.hosts_of("preflight");
    let error = |i: usize| hosts[i]["error"].as_str().unwrap_or("").to_string();
    assert_eq!(hosts[0]["status"], "ok", "{}", bad.text());
    assert_eq!(hosts[1]["status"], "failed");
    assert!(error(1).contains("[Swap] swap is on"), "{}", error(1));
    assert!(!error(1).contains("Port-"), "{}", error(1));
    assert_eq!(hosts[2]["status"], "failed");
    assert!(
        error(2).contains("[Port-10250] port 10250 is in use by socat"),
        "{}",
        error(2)
    );
    assert!(!error(2).contains("[Swap]"), "{}", error(2));

    // the text output names host, check and the way out
    let text = provision(&["init", "phase", "preflight", "-i", inv]);
    assert_eq!(text.code, 1);
    let line_of = |name: &str| {
        text.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {}", text.stdout))
            .to_string()
    };
    assert!(
        line_of(&tb.machines[1].name).contains("FAILED"),
        "{}",
        text.stdout
    );
    assert!(
        line_of(&tb.machines[0].name).contains("passed"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("--ignore-preflight-errors"),
        "{}",
        text.stdout
    );

    // ignoring one of the two is not enough; ignoring both is
    let one = preflight(&["--ignore-preflight-errors", "Swap"]);
    assert_eq!(one.code, 1, "{}", one.text());
    let both = preflight(&["--ignore-preflight-errors", "swap,Port-10250"]);
    assert_eq!(both.code, 0, "{}", both.text());
    let warnings = both.hosts_of("preflight")[2]["warnings"].to_string();
    assert!(
        warnings.contains("[Port-10250]") && warnings.contains("(ignored)"),
        "{warnings}"
    );
    let all = preflight(&["--ignore-preflight-errors", "all"]);
    assert_eq!(all.code, 0, "{}", all.text());

    // Machine 0: left over from a kubeadm package, a drop-in that replaces the kubelet's command
    // (it would run its own binary without provision's flags); a proxy's environment for
    // containerd only adds settings
    tb.ssh(
        0,
        "mkdir -p /usr/lib/systemd/system/kubelet.service.d /etc/systemd/system/containerd.service.d \
         && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/kubelet $KUBELET_KUBEADM_ARGS\\n' \
              > /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf \
         && printf '[Service]\\nEnvironment=HTTPS_PROXY=http://127.0.0.1:3128\\n' \
              > /etc/systemd/system/containerd.service.d/http-proxy.conf",
    );
    let others_fine = ["--ignore-preflight-errors", "swap,Port-10250"];
    let dropped = preflight(&others_fine);
    assert_eq!(dropped.code, 1, "{}", dropped.text());
    let hosts = dropped.hosts_of("preflight");
    assert_eq!(hosts[0]["status"], "failed", "{}", dropped.text());
    let error = hosts[0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains(
            "[UnitDropIn] /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf replaces the command of kubelet.service"
        ),
        "{error}"
    );
    assert!(!error.contains("http-proxy.conf"), "{error}");
    tb.ssh(
        0,
        "rm /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
    );
    let removed = preflight(&others_fine);
    assert_eq!(removed.code, 0, "{}", removed.text());
    let warnings = removed.hosts_of("preflight")[0]["warnings"].to_string();
    assert!(
        warnings.contains("http-proxy.conf also applies to containerd.service"),
        "{warnings}"
    );

    // an earlier cluster's CNI configuration, first by name: pods would get its network
    tb.ssh(
        0,
        "mkdir -p /etc/cni/net.d && echo '{\"cniVersion\":\"1.0.0\",\"name\":\"old\",\"plugins\":[{\"type\":\"bridge\"}]}' \
         > /etc/cni/net.d/05-old.conflist",
    );
    let leftover = preflight(&others_fine);
    assert_eq!(leftover.code, 1, "{}", leftover.text());
    let error = leftover.hosts_of("preflight")[0]["error"].to_string();
    assert!(
        error.contains(
            "[CNIConfig] /etc/cni/net.d/05-old.conflist sorts before 10-provision.conflist"
        ),
        "{error}"
    );
    // after the cluster's own it is never read
    tb.ssh(
        0,
        "mv /etc/cni/net.d/05-old.conflist /etc/cni/net.d/90-old.conflist",
    );
    let after = preflight(&others_fine);
    assert_eq!(after.code, 0, "{}", after.text());
}
