//! The pod networks provision deploys, one module each, behind one small descriptor: what a
//! network needs on a node, the manifest of its pods (when it runs as pods), what it leaves on a
//! host for `reset` to remove, whether it enforces NetworkPolicy, and what `verify` names when
//! traffic or policies fail. Adding a network is one module (plus its templates) and a line in
//! `ALL`/`of`: the `cni` and `addons` phases, reset and verify read the descriptor.

pub mod builtin;
pub mod calico;
pub mod cilium;
pub mod flannel;
pub mod policy_engine;

use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, Leftovers};
use crate::inventory::CniName;

/// Where CNI configuration goes on every node.
pub const NET_D: &str = "/etc/cni/net.d";

pub trait Cni: Sync {
    /// The name in the inventory (`spec.cni.name`).
    fn name(&self) -> &'static str;

    /// Whether it runs as pods (configured through the API by the addons phase; nodes turn
    /// Ready once its pods run) rather than on the hosts by the cni phase.
    fn runs_as_pods(&self) -> bool {
        false
    }

    /// The images of its pods, by the manifest's name for each.
    fn images(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The manifest of its pods (None for a network configured on the hosts).
    fn manifest(&self, _cluster: &Cluster) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// What `node_actions` needs to know of a host.
    fn probes(&self, _cluster: &Cluster) -> Vec<Probe> {
        Vec::new()
    }

    /// What a node holds for it (a network that runs as pods writes its own configuration).
    fn node_actions(
        &self,
        _cluster: &Cluster,
        _host: &Host,
        _observed: &Observed,
    ) -> Result<Vec<Action>, String> {
        Ok(vec![Action::dir(NET_D, 0o755)])
    }

    /// Its configuration in `NET_D`. The runtime gives pods the network of the first file there
    /// by name, so no other may sort before it (preflight's `CNIConfig`).
    fn config(&self) -> &'static str;

    /// What it leaves on a host: `reset` removes it whichever network the cluster runs.
    fn leftovers(&self) -> Leftovers;

    /// Whether pods get their addresses from their Node's podCIDR (the inventory's range of
    /// that node), so that verify can tell a pod given another network (Calico's own IPAM
    /// hands out blocks of its own).
    fn assigns_node_range(&self) -> bool {
        true
    }

    /// Whether NetworkPolicy objects are enforced (verify fails when they are not).
    fn enforces_network_policy(&self) -> bool {
        false
    }

    /// What to look at on `host` when its pods' traffic or policies misbehave.
    fn suspect(&self, host: &Host) -> String;
}

/// Every network provision knows, for what spans them all (reset's leftovers, verify's hints).
pub static ALL: [&dyn Cni; 4] = [
    &builtin::Builtin,
    &flannel::Flannel,
    &calico::Calico,
    &cilium::Cilium,
];

/// The descriptor of the network named in the inventory.
pub fn of(name: CniName) -> &'static dyn Cni {
    match name {
        CniName::Builtin => &builtin::Builtin,
        CniName::Flannel => &flannel::Flannel,
        CniName::Calico => &calico::Calico,
        CniName::Cilium => &cilium::Cilium,
    }
}

/// Whether the cluster's NetworkPolicy objects are enforced: by its network, or by the engine
/// that runs beside a network that has none.
pub fn enforced(cluster: &Cluster) -> bool {
    of(cluster.cni).enforces_network_policy() || policy_engine::enabled(cluster)
}

/// What to look at on `host` when policies are not enforced there.
pub fn policy_suspect(cluster: &Cluster, host: &Host) -> String {
    if policy_engine::enabled(cluster) {
        policy_engine::suspect(host)
    } else {
        of(cluster.cni).suspect(host)
    }
}

/// The networks among `all` that enforce NetworkPolicy, for messages ("calico or cilium").
pub fn enforcing(all: &[&dyn Cni]) -> String {
    all.iter()
        .filter(|c| c.enforces_network_policy())
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The context every pod network's manifest renders with: the settings that matter (the pod
/// subnet, the per-node block size, VXLAN VNI and port, the MTU) and its images. Each node's
/// pod range is its Node's spec.podCIDR, which the kubelet phase sets from the inventory, so
/// every network and the inventory agree on it.
pub(crate) fn manifest_context<'a>(cluster: &'a Cluster, cni: &dyn Cni) -> Manifest<'a> {
    Manifest {
        images: cni.images().into_iter().collect(),
        cluster_name: &cluster.name,
        pod_subnet: cluster.pod_subnet.to_string(),
        block_size: cluster.node_cidr_mask_size,
        vni: cluster.vxlan.vni,
        port: cluster.vxlan.port,
        // 0: each network finds the MTU of the node's interface and subtracts its overhead
        mtu: cluster.vxlan.mtu.unwrap_or(0),
        crds: Vec::new(),
    }
}

/// What a pod network's manifest is rendered from.
#[derive(serde::Serialize)]
pub(crate) struct Manifest<'a> {
    images: std::collections::BTreeMap<&'static str, String>,
    cluster_name: &'a str,
    pod_subnet: String,
    block_size: u8,
    vni: u32,
    port: u16,
    mtu: u32,
    /// Calico's custom resource types.
    pub(crate) crds: Vec<calico::Crd>,
}

/// The manifest of the cluster's network, or None when it is configured on the hosts.
pub fn manifest(cluster: &Cluster) -> Result<Option<String>, String> {
    of(cluster.cni).manifest(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cluster(cni: &str, extra: &str) -> Cluster {
        crate::cluster::from_text(&format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec:\n  networking: {{podSubnet: 10.32.0.0/16, nodeCIDRMaskSize: 25}}\n  cni:\n    name: {cni}\n{extra}  hosts:\n  - {{name: n1, address: 192.168.7.20, roles: [control-plane]}}\n"
        ))
    }

    /// Every document parses as YAML with a kind, apiVersion and name; returns them by kind.
    fn docs(m: &str) -> Vec<serde_yaml::Value> {
        let out: Vec<serde_yaml::Value> = crate::api::documents(m)
            .into_iter()
            .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
            .collect();
        for d in &out {
            assert!(d["kind"].as_str().is_some(), "{d:?}");
            assert!(d["apiVersion"].as_str().is_some(), "{d:?}");
            assert!(d["metadata"]["name"].as_str().is_some(), "{d:?}");
        }
        out
    }

    fn find<T: serde::de::DeserializeOwned>(
        docs: &[serde_yaml::Value],
        kind: &str,
        name: &str,
    ) -> Result<T, Box<dyn std::error::Error>> {
        let d = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .ok_or(format!("the manifest has no {kind} {name}"))?;
        Ok(serde_yaml::from_value(d.clone())?)
    }

    fn env(ds: &DaemonSet, container: &str, name: &str) -> Option<String> {
        let spec = ds.spec.clone().template.spec?;
        let c = spec.containers.into_iter().find(|c| c.name == container)?;
        c.env?.into_iter().find(|e| e.name == name)?.value
    }

    #[test]
    fn the_inventory_and_the_descriptors_agree_on_who_enforces_policies() {
        use crate::inventory::CniName;
        for name in [
            CniName::Builtin,
            CniName::Flannel,
            CniName::Calico,
            CniName::Cilium,
        ] {
            assert_eq!(
                of(name).enforces_network_policy(),
                name.enforces_policies(),
                "{}",
                name.as_str()
            );
            assert_eq!(of(name).name(), name.as_str());
        }
    }

    #[test]
    fn the_builtin_network_gets_the_policy_engine_unless_turned_off() {
        assert!(enforced(&cluster("builtin", "")));
        assert!(cluster("builtin", "").policy_engine);
        assert!(!enforced(&cluster("builtin", "    networkPolicy: false\n")));
        assert!(!enforced(&cluster("flannel", "")));
        assert!(enforced(&cluster("flannel", "    networkPolicy: true\n")));
        let calico = cluster("calico", "");
        assert!(enforced(&calico) && !calico.policy_engine);
    }

    #[test]
    fn the_builtin_network_has_no_manifest() -> Result<(), Box<dyn std::error::Error>> {
        assert!(manifest(&cluster("builtin", ""))?.is_none());
        Ok(())
    }

    #[test]
    fn flannel_gets_the_pod_subnet_and_the_vxlan_settings() -> Result<(), Box<dyn std::error::Error>>
    {
        let m = manifest(&cluster(
            "flannel",
            "    vxlan: {vni: 7, port: 8472, mtu: 1400}\n",
        ))?
        .ok_or("no flannel manifest")?;
        let d = docs(&m);
        let cm: ConfigMap = find(&d, "ConfigMap", "kube-flannel-cfg")?;
        let net: serde_json::Value = serde_json::from_str(
            &cm.data.as_ref().ok_or("the ConfigMap has no data")?["net-conf.json"],
        )?;
        assert_eq!(net["Network"], "10.32.0.0/16");
        assert_eq!(net["Backend"]["Type"], "vxlan");
        assert_eq!(net["Backend"]["VNI"], 7);
        assert_eq!(net["Backend"]["Port"], 8472);
        assert_eq!(net["Backend"]["MTU"], 1400);
        let cni: serde_json::Value =
            serde_json::from_str(&cm.data.ok_or("the ConfigMap has no data")?["cni-conf.json"])?;
        assert_eq!(cni["plugins"][0]["type"], "flannel");
        let ds: DaemonSet = find(&d, "DaemonSet", "kube-flannel-ds")?;
        let pod = ds
            .spec
            .template
            .spec
            .ok_or("the DaemonSet has no pod spec")?;
        assert_eq!(pod.host_network, Some(true));
        assert!(
            pod.containers[0]
                .image
                .as_deref()
                .ok_or("the container has no image")?
                .starts_with("ghcr.io/flannel-io/flannel:v")
        );
        assert!(
            pod.containers[0]
                .command
                .as_ref()
                .ok_or("the container has no command")?
                .contains(&"--kube-subnet-mgr".to_string())
        );
        Ok(())
    }

    #[test]
    fn flannel_without_an_mtu_lets_flannel_find_it() -> Result<(), Box<dyn std::error::Error>> {
        let m = manifest(&cluster("flannel", ""))?.ok_or("no flannel manifest")?;
        let cm: ConfigMap = find(&docs(&m), "ConfigMap", "kube-flannel-cfg")?;
        let net: serde_json::Value =
            serde_json::from_str(&cm.data.ok_or("the ConfigMap has no data")?["net-conf.json"])?;
        assert!(net["Backend"].get("MTU").is_none(), "{net}");
        Ok(())
    }

    #[test]
    fn calico_gets_its_pool_block_size_vxlan_and_crds() -> Result<(), Box<dyn std::error::Error>> {
        let m = manifest(&cluster("calico", "    vxlan: {vni: 4100, mtu: 1410}\n"))?
            .ok_or("no calico manifest")?;
        let d = docs(&m);
        let ds: DaemonSet = find(&d, "DaemonSet", "calico-node")?;
        assert_eq!(
            env(&ds, "calico-node", "CALICO_IPV4POOL_CIDR").as_deref(),
            Some("10.32.0.0/16")
        );
        assert_eq!(
            env(&ds, "calico-node", "CALICO_IPV4POOL_BLOCK_SIZE").as_deref(),
            Some("25")
        );
        assert_eq!(
            env(&ds, "calico-node", "CALICO_IPV4POOL_VXLAN").as_deref(),
            Some("Always")
        );
        assert_eq!(
            env(&ds, "calico-node", "CALICO_IPV4POOL_IPIP").as_deref(),
            Some("Never")
        );
        assert_eq!(
            env(&ds, "calico-node", "FELIX_VXLANVNI").as_deref(),
            Some("4100")
        );
        let cm: ConfigMap = find(&d, "ConfigMap", "calico-config")?;
        let data = cm.data.ok_or("the ConfigMap has no data")?;
        assert_eq!(data["veth_mtu"], "1410");
        assert_eq!(data["calico_backend"], "vxlan");
        let crds: Vec<&serde_yaml::Value> = d
            .iter()
            .filter(|x| x["kind"] == "CustomResourceDefinition")
            .collect();
        assert_eq!(crds.len(), calico::CALICO_TYPES.len());
        assert!(
            crds.iter()
                .any(|c| c["metadata"]["name"] == "ippools.crd.projectcalico.org")
        );
        let _: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_value(crds[0].clone())?;
        Ok(())
    }

    #[test]
    fn cilium_uses_the_nodes_pod_cidrs_a_vxlan_tunnel_and_keeps_kube_proxy()
    -> Result<(), Box<dyn std::error::Error>> {
        let m = manifest(&cluster("cilium", "    vxlan: {port: 8473}\n"))?
            .ok_or("no cilium manifest")?;
        let d = docs(&m);
        let cm: ConfigMap = find(&d, "ConfigMap", "cilium-config")?;
        let data = cm.data.ok_or("the ConfigMap has no data")?;
        assert_eq!(data["ipam"], "kubernetes");
        assert_eq!(data["routing-mode"], "tunnel");
        assert_eq!(data["tunnel-protocol"], "vxlan");
        assert_eq!(data["tunnel-port"], "8473");
        assert_eq!(data["kube-proxy-replacement"], "false");
        assert_eq!(data["cluster-name"], "prod");
        let ds: DaemonSet = find(&d, "DaemonSet", "cilium")?;
        let pod = ds
            .spec
            .template
            .spec
            .ok_or("the DaemonSet has no pod spec")?;
        assert!(
            pod.containers[0]
                .image
                .as_deref()
                .ok_or("the container has no image")?
                .starts_with("quay.io/cilium/cilium:v")
        );
        Ok(())
    }
}
