//! Snapshots of every file the phases render, through the phases' own `desired` with fixed
//! observations: a change to a rendered file shows in review as a diff of its snapshot in
//! `src/phases/snapshots/`. (`INSTA_UPDATE=always cargo test --lib snapshots` rewrites them.)

use super::step::Step;
use super::{cni, control_plane, etcd, host, kubelet, runtime};
use crate::bundle::plan::BundlePlan;
use crate::cluster::{Cluster, Host};
use crate::host::Action;
use crate::host::probe::{Conditions, Observed, Probe};
use std::sync::Arc;

fn cluster(spec: &str) -> Cluster {
    crate::cluster::from_text(&format!(
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: snap}}\nspec:\n{spec}  hosts:\n  - {{name: cp1, address: 192.168.9.11, roles: [control-plane]}}\n  - {{name: w1, address: 192.168.9.12, roles: [worker], labels: {{tier: web}}}}\n  - {{name: w2, address: 192.168.9.13, roles: [worker]}}\n"
    ))
}

/// A host as the probes found it: containers' limits, nftables, cgroup v1, credentials.
fn observed(probes: Vec<Probe>) -> Observed {
    Observed::with(&probes)
        .set_conditions(Conditions {
            can_lower_oom_score: false,
            conntrack_writable: false,
            swap_on: false,
            has_nft: true,
            cgroup_v1: true,
        })
        .set_file(kubelet::KUBECONFIG, b"(the node's own credentials)")
        .set_uplink("host0", 1500)
}

fn desired<S: Step>(
    step: &S,
    c: &Cluster,
    h: &Host,
    shared: &S::Shared,
) -> Result<Vec<Action>, String> {
    Ok(step
        .desired(c, h, &observed(step.probes(c, h)), shared)?
        .actions)
}

/// Every file among `actions`, as its snapshot `<group>@<path>`.
fn snap_files(group: &str, actions: &[Action]) -> Result<(), String> {
    let mut n = 0;
    for a in actions {
        if let Action::File(f) = a {
            let text = String::from_utf8(f.content.to_vec())
                .map_err(|e| format!("{}: not UTF-8: {e}", f.path))?;
            let name = format!(
                "{group}@{}",
                f.path.trim_start_matches('/').replace('/', "_")
            );
            insta::assert_snapshot!(name, text);
            n += 1;
        }
    }
    assert!(n > 0, "{group} rendered no file");
    Ok(())
}

#[test]
fn host_files() -> Result<(), String> {
    let c = cluster("");
    snap_files("host", &host::kernel(&c, &c.hosts[0])?)?;
    Ok(())
}

#[test]
fn builtin_network_files() -> Result<(), Box<dyn std::error::Error>> {
    let c = cluster("");
    snap_files("cni-vxlan", &desired(&cni::Cni, &c, &c.hosts[1], &())?)?;
    let c = cluster("  cni: {name: builtin, overlay: none}\n");
    snap_files("cni-routes", &desired(&cni::Cni, &c, &c.hosts[1], &())?)?;
    Ok(())
}

#[test]
fn runtime_files() -> Result<(), Box<dyn std::error::Error>> {
    let mirrors = "    registryMirrors: {docker.io: [https://mirror.example.com]}\n";
    let c = cluster(&format!(
        "  runtime:\n    name: containerd\n    runtimeClasses: [gvisor]\n{mirrors}"
    ));
    let plan = Some(Arc::new(BundlePlan::resolve(&c)?));
    snap_files(
        "containerd",
        &desired(&runtime::Runtime, &c, &c.hosts[0], &plan)?,
    )?;
    let c = cluster(&format!(
        "  kubernetesVersion: 1.36.4\n  runtime:\n    name: cri-o\n    runtimeClasses: [kata]\n{mirrors}"
    ));
    let plan = Some(Arc::new(BundlePlan::resolve(&c)?));
    snap_files(
        "cri-o",
        &desired(&runtime::Runtime, &c, &c.hosts[0], &plan)?,
    )?;
    Ok(())
}

#[test]
fn control_plane_files() -> Result<(), Box<dyn std::error::Error>> {
    let c = cluster("");
    snap_files("etcd", &desired(&etcd::Etcd, &c, &c.hosts[0], &())?)?;
    let encryption = control_plane::Encryption {
        existing: Some("(the cluster's encryption configuration)\n".into()),
        fresh: String::new(),
        with_seed: true,
    };
    let cp = desired(&control_plane::ControlPlane, &c, &c.hosts[0], &encryption)?;
    // the encryption configuration is a secret: kept as the cluster has it, never rendered here
    let files: Vec<Action> = cp
        .into_iter()
        .filter(|a| a.subject() != crate::paths::ENCRYPTION_CONFIG)
        .collect();
    snap_files("control-plane", &files)?;
    Ok(())
}

#[test]
fn node_files() -> Result<(), Box<dyn std::error::Error>> {
    let c = cluster("");
    let bootstrap = kubelet::Bootstrap::default();
    snap_files(
        "kubelet-worker",
        &desired(&kubelet::Kubelet, &c, &c.hosts[1], &bootstrap)?,
    )?;
    snap_files(
        "kubelet-control-plane",
        &desired(&kubelet::Kubelet, &c, &c.hosts[0], &bootstrap)?,
    )?;
    snap_files(
        "kube-proxy",
        &desired(&kubelet::proxy::KubeProxy, &c, &c.hosts[1], &())?,
    )?;
    Ok(())
}

#[test]
fn manifests() -> Result<(), String> {
    let c = cluster("");
    insta::assert_snapshot!(
        "coredns",
        super::addons::coredns_manifest(&c, "registry.k8s.io/coredns/coredns:v1.14.6")?
    );
    insta::assert_snapshot!(
        "encryption-config",
        control_plane::encryption_config("key1", "(32 random bytes, base64)")?
    );
    for name in ["flannel", "calico", "cilium"] {
        let c = cluster(&format!("  cni: {{name: {name}}}\n"));
        let manifest = crate::cni::manifest(&c)?.ok_or(format!("no {name} manifest"))?;
        insta::assert_snapshot!(name, manifest);
    }
    Ok(())
}
