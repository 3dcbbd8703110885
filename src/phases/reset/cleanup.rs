//! What a reset host loses, as actions (a pure function of the host): units stopped and disabled,
//! pods removed through the CRI, mounts undone, the networks' links and packet-filter rules, the
//! links into the bundle, and every path provision writes. The networks' and runtimes' parts come
//! from their descriptors' leftovers.

use super::*;

/// Units provision writes, stopped in this order: the kubelet first (it would restart pods),
/// then the control plane; etcd, the networks' and the runtimes' units last (pods are removed
/// through the runtime).
pub(super) const NODE_UNITS: [&str; 2] = ["kubelet", "kube-proxy"];

/// kube-proxy's own leftovers: its IPVS dummy link and its chains (the kubelet's share the
/// prefix).
pub(super) const KUBE_PROXY_LINK: &str = "kube-ipvs0";

pub(super) const KUBE_CHAINS: &str = "KUBE-";

pub(super) fn stopped(unit: &str) -> Action {
    Action::Unit(UnitSpec {
        name: format!("{unit}.service"),
        enabled: false,
        active: false,
        restart_when_changed: Vec::new(),
    })
}

pub(super) fn exec(label: &str, functions: &str, cmd: &str, unless: &str) -> Action {
    Action::Exec {
        label: label.into(),
        cmd: format!("{functions}\n{cmd}"),
        unless: format!("{functions}\n{unless}"),
    }
}

/// What a reset host must lose, in order: what every network and runtime provision knows left
/// behind, whichever the cluster runs (a host may have run another before).
pub fn cleanup(_: &Cluster, _: &Host) -> Result<Vec<Action>, String> {
    Ok(cleanup_of(&cni::ALL, &runtime::ALL))
}

/// Everything the leftovers of `networks` and `runtimes` hold, and what provision itself writes.
pub(super) fn leftovers_of(networks: &[&dyn Cni], runtimes: &[&dyn Runtime]) -> Leftovers {
    let mut all = Leftovers::default();
    // the policy engine runs with more than one network
    let parts = networks
        .iter()
        .map(|c| c.leftovers())
        .chain([
            crate::cni::policy_engine::leftovers(),
            crate::ha::leftovers(),
        ])
        .chain(runtimes.iter().map(|r| r.leftovers()));
    for l in parts {
        for (to, from) in [
            (&mut all.units, l.units),
            (&mut all.paths, l.paths),
            (&mut all.links, l.links),
            (&mut all.chains, l.chains),
            (&mut all.ipsets, l.ipsets),
            (&mut all.mounts, l.mounts),
        ] {
            add_new(to, from);
        }
        add_new(&mut all.rule_prefs, l.rule_prefs);
    }
    all
}

/// Appends the items of `from` that `to` does not hold yet.
fn add_new<T: PartialEq>(to: &mut Vec<T>, from: Vec<T>) {
    for item in from {
        if !to.contains(&item) {
            to.push(item);
        }
    }
}

/// The cleanup of a host, given the networks and runtimes whose leftovers it removes.
pub fn cleanup_of(networks: &[&dyn Cni], runtimes: &[&dyn Runtime]) -> Vec<Action> {
    let left = leftovers_of(networks, runtimes);
    // the control plane in reverse: its other units pull the API server in (Wants=), and one
    // restarting would cancel the API server's stop
    let mut actions: Vec<Action> = NODE_UNITS
        .iter()
        .chain([crate::approver::SERVICE].iter())
        .chain(control_plane::COMPONENTS.iter().rev())
        .map(|u| stopped(u))
        .collect();
    actions.push(exec(
        "remove the pods and their containers",
        "",
        "if command -v crictl >/dev/null 2>&1; then timeout 120 crictl rmp -fa >/dev/null 2>&1 || true; fi\n\
         systemctl stop kubepods.slice 2>/dev/null || true",
        "! systemctl is-active -q kubepods.slice && \
         { ! command -v crictl >/dev/null 2>&1 || [ -z \"$(timeout 10 crictl pods -q 2>/dev/null)\" ]; }",
    ));
    // etcd (its snapshot timer first), then the networks' units, then the runtimes' (their
    // order in `left`)
    actions.push(Action::Unit(UnitSpec {
        name: etcd::SNAPSHOT_TIMER_UNIT.into(),
        enabled: false,
        active: false,
        restart_when_changed: Vec::new(),
    }));
    actions.push(stopped("etcd"));
    actions.extend(left.units.iter().map(|u| stopped(u)));
    let procs = format!(
        "left() {{ for d in /proc/[0-9]*; do case \"$(readlink \"$d/exe\" 2>/dev/null)\" in {}/*) echo \"${{d#/proc/}}\";; esac; done; }}",
        bundle::HOST_ROOT
    );
    actions.push(exec(
        "stop processes still running from the bundle (container shims)",
        &procs,
        "left | xargs -r kill -9; sleep 1",
        "[ -z \"$(left)\" ]",
    ));
    // below the state directories only: a disk mounted at /var/lib/etcd or
    // /var/lib/containerd itself is the operator's and stays (it is emptied, not removed)
    let mut under = vec![kubelet::STATE_DIR.to_string()];
    under.extend(left.mounts.iter().cloned());
    actions.push(exec(
        "unmount the pods' volumes, root filesystems and network namespaces",
        &format!(
            "mounts() {{ findmnt -rn -o TARGET | grep -E '^({})/|^/run/netns/cni-'; }}",
            under.join("|")
        ),
        "mounts | sort -r | while read -r m; do umount \"$m\" 2>/dev/null || umount -l \"$m\"; done; rm -f /run/netns/cni-*",
        "[ -z \"$(mounts)\" ] && ! ls /run/netns/cni-* >/dev/null 2>&1",
    ));
    let mut links = left.links.clone();
    links.push(KUBE_PROXY_LINK.into());
    let rules = rule_pattern(&left.chains);
    let sets = left
        .ipsets
        .iter()
        .map(|p| format!("^{p}"))
        .collect::<Vec<_>>()
        .join("|");
    let net = format!(
        "links() {{ for l in {links}; do ip link show \"$l\" >/dev/null 2>&1 && echo \"$l\"; done; }}\n\
         rules() {{ {{ iptables-save; ip6tables-save; }} 2>/dev/null | grep -E '{rules}'; }}\n\
         nft_tables() {{ nft list tables 2>/dev/null | grep -E ' kube-proxy$'; }}\n\
         sets() {{ ipset list -n 2>/dev/null | grep -E '{sets}'; }}\n\
         ip_rules() {{ for f in -4 -6; do for p in {prefs}; do ip $f rule show pref $p 2>/dev/null | sed \"s/^/$f /\"; done; done; }}",
        links = links.join(" "),
        prefs = left
            .rule_prefs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    );
    actions.push(exec(
        "remove the pod network's links, and the packet filter and routing rules of kube-proxy, the CNI and the policy engine",
        &net,
        &format!(
            "links | while read -r l; do ip link delete \"$l\"; done\n\
             for t in iptables ip6tables; do\n\
               command -v $t-save >/dev/null 2>&1 || continue\n\
               if $t-save | grep -qE '{rules}'; then $t-save | grep -vE '{rules}' | $t-restore; fi\n\
             done\n\
             nft_tables | while read -r _ family name; do nft delete table \"$family\" \"$name\"; done\n\
             sets | while read -r s; do ipset destroy \"$s\"; done\n\
             ip_rules | while read -r f p _; do ip $f rule del pref \"${{p%:}}\"; done\n\
             true"
        ),
        "[ -z \"$(links)\" ] && [ -z \"$(rules)\" ] && [ -z \"$(nft_tables)\" ] && [ -z \"$(sets)\" ] && [ -z \"$(ip_rules)\" ]",
    ));
    actions.push(exec(
        "remove the links into the bundle's directory",
        &format!(
            "links() {{ find /usr/local/bin /opt/cni/bin /opt -maxdepth 1 -type l -lname '{}/*' 2>/dev/null; }}",
            bundle::HOST_ROOT
        ),
        "links | xargs -r rm -f",
        "[ -z \"$(links)\" ]",
    ));
    actions.extend(owned_paths(&left).iter().map(|p| Action::absent(p)));
    actions
}

/// The lines of `iptables-save` that belong to Kubernetes: kube-proxy's and the networks'
/// chains (`chains`, prefixes), the rules in them and those that jump to them, and provision's
/// own commented rules.
pub(super) fn rule_pattern(chains: &[String]) -> String {
    let mut prefixes = vec![KUBE_CHAINS.to_string()];
    prefixes.extend(chains.iter().cloned());
    let c = prefixes.join("|");
    format!("^:({c})|^-A ({c})| -[jg] ({c})|provision-(masquerade|forward)")
}

/// Files and directories provision writes on a host, with the networks' and runtimes'.
pub(super) fn owned_paths(left: &Leftovers) -> Vec<String> {
    let mut paths: Vec<String> = [
        paths::KUBERNETES_DIR,
        kubelet::STATE_DIR,
        "/var/lib/kube-proxy",
        etcd::DATA_DIR,
        runtime::CRICTL_CONFIG,
        "/var/lib/cni",
        "/usr/local/lib/provision",
        "/var/lib/provision",
        bundle::HOST_ROOT,
        host::SYSCTL_FILE,
        host::MODULES_FILE,
        kubelet::UNIT,
        kubelet::PROXY_UNIT,
        etcd::UNIT,
        etcd::SNAPSHOT_SERVICE,
        etcd::SNAPSHOT_TIMER,
        crate::approver::UNIT,
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.extend(left.paths.iter().cloned());
    paths.extend(
        control_plane::COMPONENTS
            .iter()
            .map(|c| format!("/etc/systemd/system/{c}.service")),
    );
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_stops_before_its_file_goes_and_the_runtime_outlives_the_pods() {
        let actions = cleanup_of(&cni::ALL, &runtime::ALL);
        let at = |subject: &str| {
            actions
                .iter()
                .position(|a| a.subject() == subject)
                .unwrap_or_else(|| panic!("no action for {subject}"))
        };
        let pods = at("remove the pods and their containers");
        assert!(at("kubelet.service") < pods);
        assert!(pods < at("containerd.service"));
        for unit in NODE_UNITS
            .iter()
            .chain([crate::approver::SERVICE].iter())
            .chain(control_plane::COMPONENTS.iter())
            .chain(["etcd", "provision-pod-routes", "containerd", "crio"].iter())
        {
            let file = format!("/etc/systemd/system/{unit}.service");
            assert!(at(&format!("{unit}.service")) < at(&file), "{unit}");
        }
        // mounts go before the directories that hold them
        let unmount = at("unmount the pods' volumes, root filesystems and network namespaces");
        assert!(unmount < at("/var/lib/kubelet") && unmount < at("/run/containerd"));
        // the controller manager and the scheduler pull the API server in (Wants=): stopped
        // after them, a restart of theirs cannot cancel its stop
        for wants in ["kube-controller-manager", "kube-scheduler"] {
            assert!(
                at(&format!("{wants}.service")) < at("kube-apiserver.service"),
                "{wants}"
            );
        }
    }

    /// The pattern goes to `grep -E` on the host: checked with grep itself.
    #[test]
    fn rule_filter_takes_kubernetes_lines_and_keeps_the_rest()
    -> Result<(), Box<dyn std::error::Error>> {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:DOCKER - [0:0]\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A PREROUTING -j DOCKER\n-A KUBE-SERVICES -j KUBE-MARK-MASQ\n\
            -A POSTROUTING -s 10.88.0.0/16 ! -d 10.88.0.0/16 -m comment --comment provision-masquerade -j MASQUERADE\n\
            -A CNI-HOSTPORT-DNAT -j DNAT\n-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE\nCOMMIT";
        let mut grep = std::process::Command::new("grep")
            .args([
                "-vE",
                &rule_pattern(&leftovers_of(&cni::ALL, &runtime::ALL).chains),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        grep.stdin
            .take()
            .ok_or("grep has no stdin")?
            .write_all(save.as_bytes())?;
        let out = grep.wait_with_output()?;
        let kept = String::from_utf8(out.stdout)?;
        assert_eq!(
            kept.lines().collect::<Vec<_>>(),
            [
                "*nat",
                ":PREROUTING ACCEPT [0:0]",
                ":DOCKER - [0:0]",
                "-A PREROUTING -j DOCKER",
                "-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
                "COMMIT"
            ]
        );
        Ok(())
    }
}
