//! The manifests of the CNIs that run as pods (Flannel, Calico, Cilium), rendered with the
//! settings that matter: the pod subnet, the per-node block size, VXLAN VNI and port, the MTU.
//! Each node's pod range is its Node's spec.podCIDR, which the kubelet phase sets from the
//! inventory, so every CNI and the inventory agree on it.

use crate::catalog::cni_images;
use crate::cluster::Cluster;
use crate::inventory::CniName;
use crate::render::render;
use serde::Serialize;

#[derive(Serialize)]
struct Crd {
    plural: &'static str,
    kind: &'static str,
    scope: &'static str,
}

/// Calico's resource types (group crd.projectcalico.org, version v1).
const CALICO_TYPES: &[(&str, &str, bool)] = &[
    ("bgpconfigurations", "BGPConfiguration", false),
    ("bgpfilters", "BGPFilter", false),
    ("bgppeers", "BGPPeer", false),
    ("blockaffinities", "BlockAffinity", false),
    ("caliconodestatuses", "CalicoNodeStatus", false),
    ("clusterinformations", "ClusterInformation", false),
    ("felixconfigurations", "FelixConfiguration", false),
    ("globalnetworkpolicies", "GlobalNetworkPolicy", false),
    ("globalnetworksets", "GlobalNetworkSet", false),
    ("hostendpoints", "HostEndpoint", false),
    ("ipamblocks", "IPAMBlock", false),
    ("ipamconfigs", "IPAMConfig", false),
    ("ipamhandles", "IPAMHandle", false),
    ("ippools", "IPPool", false),
    ("ipreservations", "IPReservation", false),
    (
        "kubecontrollersconfigurations",
        "KubeControllersConfiguration",
        false,
    ),
    ("networkpolicies", "NetworkPolicy", true),
    ("networksets", "NetworkSet", true),
    (
        "stagedglobalnetworkpolicies",
        "StagedGlobalNetworkPolicy",
        false,
    ),
    (
        "stagedkubernetesnetworkpolicies",
        "StagedKubernetesNetworkPolicy",
        true,
    ),
    ("stagednetworkpolicies", "StagedNetworkPolicy", true),
    ("tiers", "Tier", false),
];

/// The manifest of the cluster's CNI, or None for the built-in network (configured on the
/// hosts by the `cni` phase).
pub fn render_manifest(cluster: &Cluster) -> Option<String> {
    let template = match cluster.cni {
        CniName::Builtin => return None,
        CniName::Flannel => "flannel.yaml",
        CniName::Calico => "calico.yaml",
        CniName::Cilium => "cilium.yaml",
    };
    let mut t = tera::Context::new();
    let images: std::collections::BTreeMap<&str, String> =
        cni_images(cluster.cni).into_iter().collect();
    t.insert("images", &images);
    t.insert("cluster_name", &cluster.name);
    t.insert("pod_subnet", &cluster.pod_subnet.to_string());
    t.insert("block_size", &cluster.node_cidr_mask_size);
    t.insert("vni", &cluster.vxlan.vni);
    t.insert("port", &cluster.vxlan.port);
    // 0: each CNI finds the MTU of the node's interface and subtracts its overhead
    t.insert("mtu", &cluster.vxlan.mtu.unwrap_or(0));
    let crds: Vec<Crd> = CALICO_TYPES
        .iter()
        .map(|(plural, kind, namespaced)| Crd {
            plural,
            kind,
            scope: if *namespaced { "Namespaced" } else { "Cluster" },
        })
        .collect();
    t.insert("crds", &crds);
    Some(render(template, &t))
}

/// The documents of a multi-document manifest, without empty ones.
pub fn documents(manifest: &str) -> Vec<&str> {
    manifest
        .split("\n---\n")
        .map(str::trim)
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cluster(cni: &str, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("i.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec:\n  networking: {{podSubnet: 10.32.0.0/16, nodeCIDRMaskSize: 25}}\n  cni:\n    name: {cni}\n{extra}  hosts:\n  - {{name: n1, address: 192.168.7.20, roles: [control-plane]}}\n"
            ),
        )
        .unwrap();
        let loaded = crate::inventory::load(&file).unwrap();
        crate::cluster::resolve(&loaded).unwrap().0
    }

    /// Every document parses as YAML with a kind, apiVersion and name; returns them by kind.
    fn docs(m: &str) -> Vec<serde_yaml::Value> {
        let out: Vec<serde_yaml::Value> = documents(m)
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
    ) -> T {
        let d = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"));
        serde_yaml::from_value(d.clone()).unwrap()
    }

    fn env(ds: &DaemonSet, container: &str, name: &str) -> Option<String> {
        let spec = ds.spec.clone().template.spec.unwrap();
        let c = spec.containers.into_iter().find(|c| c.name == container)?;
        c.env?.into_iter().find(|e| e.name == name)?.value
    }

    #[test]
    fn the_builtin_network_has_no_manifest() {
        assert!(render_manifest(&cluster("builtin", "")).is_none());
    }

    #[test]
    fn flannel_gets_the_pod_subnet_and_the_vxlan_settings() {
        let m = render_manifest(&cluster(
            "flannel",
            "    vxlan: {vni: 7, port: 8472, mtu: 1400}\n",
        ))
        .unwrap();
        let d = docs(&m);
        let cm: ConfigMap = find(&d, "ConfigMap", "kube-flannel-cfg");
        let net: serde_json::Value =
            serde_json::from_str(&cm.data.as_ref().unwrap()["net-conf.json"]).unwrap();
        assert_eq!(net["Network"], "10.32.0.0/16");
        assert_eq!(net["Backend"]["Type"], "vxlan");
        assert_eq!(net["Backend"]["VNI"], 7);
        assert_eq!(net["Backend"]["Port"], 8472);
        assert_eq!(net["Backend"]["MTU"], 1400);
        let cni: serde_json::Value =
            serde_json::from_str(&cm.data.unwrap()["cni-conf.json"]).unwrap();
        assert_eq!(cni["plugins"][0]["type"], "flannel");
        let ds: DaemonSet = find(&d, "DaemonSet", "kube-flannel-ds");
        let pod = ds.spec.template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert!(
            pod.containers[0]
                .image
                .as_deref()
                .unwrap()
                .starts_with("ghcr.io/flannel-io/flannel:v")
        );
        assert!(
            pod.containers[0]
                .command
                .as_ref()
                .unwrap()
                .contains(&"--kube-subnet-mgr".to_string())
        );
    }

    #[test]
    fn flannel_without_an_mtu_lets_flannel_find_it() {
        let m = render_manifest(&cluster("flannel", "")).unwrap();
        let cm: ConfigMap = find(&docs(&m), "ConfigMap", "kube-flannel-cfg");
        let net: serde_json::Value =
            serde_json::from_str(&cm.data.unwrap()["net-conf.json"]).unwrap();
        assert!(net["Backend"].get("MTU").is_none(), "{net}");
    }

    #[test]
    fn calico_gets_its_pool_block_size_vxlan_and_crds() {
        let m = render_manifest(&cluster("calico", "    vxlan: {vni: 4100, mtu: 1410}\n")).unwrap();
        let d = docs(&m);
        let ds: DaemonSet = find(&d, "DaemonSet", "calico-node");
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
        let cm: ConfigMap = find(&d, "ConfigMap", "calico-config");
        let data = cm.data.unwrap();
        assert_eq!(data["veth_mtu"], "1410");
        assert_eq!(data["calico_backend"], "vxlan");
        let crds: Vec<&serde_yaml::Value> = d
            .iter()
            .filter(|x| x["kind"] == "CustomResourceDefinition")
            .collect();
        assert_eq!(crds.len(), CALICO_TYPES.len());
        assert!(
            crds.iter()
                .any(|c| c["metadata"]["name"] == "ippools.crd.projectcalico.org")
        );
        let _: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_value(crds[0].clone()).unwrap();
    }

    #[test]
    fn cilium_uses_the_nodes_pod_cidrs_a_vxlan_tunnel_and_keeps_kube_proxy() {
        let m = render_manifest(&cluster("cilium", "    vxlan: {port: 8473}\n")).unwrap();
        let d = docs(&m);
        let cm: ConfigMap = find(&d, "ConfigMap", "cilium-config");
        let data = cm.data.unwrap();
        assert_eq!(data["ipam"], "kubernetes");
        assert_eq!(data["routing-mode"], "tunnel");
        assert_eq!(data["tunnel-protocol"], "vxlan");
        assert_eq!(data["tunnel-port"], "8473");
        assert_eq!(data["kube-proxy-replacement"], "false");
        assert_eq!(data["cluster-name"], "prod");
        let ds: DaemonSet = find(&d, "DaemonSet", "cilium");
        let pod = ds.spec.template.spec.unwrap();
        assert!(
            pod.containers[0]
                .image
                .as_deref()
                .unwrap()
                .starts_with("quay.io/cilium/cilium:v")
        );
    }
}
