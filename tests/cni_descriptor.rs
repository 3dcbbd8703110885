//! A network is one descriptor: a throw-away one, defined only here, is picked up by reset
//! (its units, files, links and chains go) and by verify (its policy verdict names it), with
//! no other file of provision changed.

use provision::cluster::{Cluster, Host};
use provision::cni::{self, Cni};
use provision::host::{Action, Leftovers};
use provision::phases::reset::cleanup_of;
use provision::runtime;
use provision::verify::policy_not_applied;
use provision::verify::report::Outcome;

struct Throwaway {
    enforces: bool,
}

impl Cni for Throwaway {
    fn name(&self) -> &'static str {
        "throwaway"
    }

    fn config(&self) -> &'static str {
        "/etc/cni/net.d/50-throwaway.conflist"
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            units: vec!["throwaway-agent".into()],
            paths: vec![self.config().into(), "/var/lib/throwaway".into()],
            links: vec!["throwaway0".into()],
            chains: vec!["THROWAWAY-".into()],
            ipsets: vec!["THROWAWAY-SET-".into()],
            mounts: vec!["/run/throwaway".into()],
            rule_prefs: vec![32200],
        }
    }

    fn enforces_network_policy(&self) -> bool {
        self.enforces
    }

    fn suspect(&self, host: &Host) -> String {
        format!("the throwaway agent on {}", host.name)
    }
}

fn exec_text(a: &Action) -> Option<String> {
    match a {
        Action::Exec { cmd, unless, .. } => Some(format!("{cmd}\n{unless}")),
        _ => None,
    }
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.yaml");
    std::fs::write(&file, "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: cp, address: 192.168.7.20, roles: [control-plane]}\n  - {name: w1, address: 192.168.7.21, roles: [worker]}\n").unwrap();
    let loaded = provision::inventory::load(&file).unwrap();
    provision::cluster::resolve(&loaded).unwrap().0
}

#[test]
fn reset_removes_what_a_new_network_leaves() {
    let ours = Throwaway { enforces: true };
    let mut networks: Vec<&dyn Cni> = cni::ALL.to_vec();
    networks.push(&ours);
    let actions = cleanup_of(&networks, &runtime::ALL);
    let at = |subject: &str| {
        actions
            .iter()
            .position(|a| a.subject() == subject)
            .unwrap_or_else(|| panic!("reset does not touch {subject}"))
    };
    // its unit stops (before the runtime's, after the kubelet's) and its files go
    let unit = at("throwaway-agent.service");
    assert!(matches!(&actions[unit], Action::Unit(u) if !u.enabled && !u.active));
    assert!(at("kubelet.service") < unit && unit < at("containerd.service"));
    for p in ["/etc/cni/net.d/50-throwaway.conflist", "/var/lib/throwaway"] {
        assert!(matches!(&actions[at(p)], Action::Absent { .. }), "{p}");
    }
    let scripts: Vec<String> = actions.iter().filter_map(exec_text).collect();
    let network = scripts
        .iter()
        .find(|s| s.contains("ip link delete"))
        .expect("a step removes the pod network's links");
    assert!(network.contains("throwaway0"), "{network}");
    assert!(network.contains("THROWAWAY-"), "{network}");
    // its ipsets, beside the policy engine's
    let sets = network
        .lines()
        .find(|l| l.starts_with("sets()"))
        .unwrap_or_default();
    for s in ["^THROWAWAY-SET-", "^KUBE-SRC-", "^KUBE-DST-"] {
        assert!(sets.contains(s), "{sets}");
    }
    // its routing rules, beside the policy engine's
    let rules = network
        .lines()
        .find(|l| l.starts_with("ip_rules()"))
        .unwrap_or_default();
    assert!(rules.contains(" 32200 32100;"), "{rules}");
    // the networks provision ships are still cleaned up beside it
    assert!(
        network.contains("provision-vx") && network.contains("cali-"),
        "{network}"
    );
    let unmount = scripts
        .iter()
        .find(|s| s.contains("umount"))
        .expect("a step unmounts");
    assert!(unmount.contains("/run/throwaway"), "{unmount}");
    // without it, none of that is touched
    let without = cleanup_of(&cni::ALL, &runtime::ALL);
    assert!(!without.iter().any(|a| a.subject().contains("throwaway")));
}

#[test]
fn verify_judges_policies_by_what_the_network_says_it_enforces() {
    let c = cluster();
    let node = &c.hosts[1];
    let enforcing = Throwaway { enforces: true };
    let mut known: Vec<&dyn Cni> = cni::ALL.to_vec();
    known.push(&enforcing);
    let row = policy_not_applied(
        &enforcing,
        &known,
        "cp → w1".into(),
        "http://10.88.1.5:8080/",
        node,
    );
    assert_eq!(row.outcome, Outcome::Fail);
    let cause = row.cause.unwrap_or_default();
    assert!(
        cause.contains("throwaway is not enforcing policies on w1"),
        "{cause}"
    );
    assert!(cause.contains("the throwaway agent on w1"), "{cause}");

    let lax = Throwaway { enforces: false };
    let row = policy_not_applied(
        &lax,
        &known,
        "cp → w1".into(),
        "http://10.88.1.5:8080/",
        node,
    );
    assert_eq!(row.outcome, Outcome::NotEnforced);
    assert!(
        row.detail.contains("not enforced by throwaway"),
        "{}",
        row.detail
    );
    // the networks that do enforce are named from their descriptors, the new one among them
    assert!(
        row.detail
            .contains("(calico or cilium or throwaway enforce them)"),
        "{}",
        row.detail
    );
}
