//! Where Kubernetes' files live on a host (kubeadm's layout), in one place.

/// Configuration, kubeconfigs and the PKI.
pub const KUBERNETES_DIR: &str = "/etc/kubernetes";
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
pub const ETCD_PKI_DIR: &str = "/etc/kubernetes/pki/etcd";
/// The cluster CA certificate, on every node.
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
pub const MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";
/// The kubelet's credentials, and the bootstrap kubeconfig it joins with when it has none.
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
pub const BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// etcd's health-check client key (present on a control plane until reset).
pub const ETCD_HEALTHCHECK_KEY: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.key";
pub const ENCRYPTION_CONFIG: &str = "/etc/kubernetes/encryption-config.yaml";
pub const AUDIT_POLICY: &str = "/etc/kubernetes/audit-policy.yaml";
/// etcd snapshots made on a control plane (kept ones and scheduled ones).
pub const ETCD_SNAPSHOT_DIR: &str = "/var/lib/provision/etcd-snapshots";

/// `/etc/kubernetes/<name>.conf` (admin, super-admin, kubelet, controller-manager, ...).
pub fn kubeconfig(name: &str) -> String {
    format!("{KUBERNETES_DIR}/{name}.conf")
}

/// `/etc/kubernetes/pki/<base>.<ext>`.
pub fn pki(base: &str, ext: &str) -> String {
    format!("{PKI_DIR}/{base}.{ext}")
}
