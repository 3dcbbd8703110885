//! The few places where what a component accepts depends on the Kubernetes version. One table,
//! so templates ask a question instead of comparing versions.

use crate::version::Version;

#[derive(Debug, Clone, Copy)]
pub struct Compat {
    minor: u32,
}

impl Compat {
    pub fn new(v: &Version) -> Compat {
        Compat { minor: v.minor }
    }

    /// kubelet < 1.27 takes the runtime as flags (`--container-runtime=remote
    /// --container-runtime-endpoint`); later ones read `containerRuntimeEndpoint` from their
    /// configuration and reject `--container-runtime`.
    pub fn kubelet_runtime_as_flags(self) -> bool {
        self.minor < 27
    }

    /// kube-apiserver < 1.24 serves an unauthenticated port (8080 on localhost) unless
    /// `--insecure-port=0`; later ones removed the flag.
    pub fn apiserver_insecure_port_flag(self) -> bool {
        self.minor < 24
    }

    /// kube-controller-manager and kube-scheduler < 1.23 serve plain HTTP unless `--port=0`.
    pub fn insecure_serving_port_flag(self) -> bool {
        self.minor < 23
    }

    /// Releases with the in-tree AWS credential provider (removed in 1.27), whose probe of the
    /// EC2 metadata address delays every kubelet start off EC2.
    pub fn in_tree_aws_credentials(self) -> bool {
        self.minor < 27
    }

    /// kubelet >= 1.31 knows `failCgroupV1` (and from 1.35 refuses cgroup v1 unless it is false).
    pub fn kubelet_fail_cgroup_v1_field(self) -> bool {
        self.minor >= 31
    }

    /// kube-proxy's nftables mode is GA from 1.33.
    pub fn kube_proxy_nftables(self) -> bool {
        self.minor >= 33
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_releases_differ_where_documented() {
        let old = Compat::new(&Version::parse("1.20.2").unwrap());
        let new = Compat::new(&Version::parse("1.36").unwrap());
        assert!(old.kubelet_runtime_as_flags() && !new.kubelet_runtime_as_flags());
        assert!(old.apiserver_insecure_port_flag() && !new.apiserver_insecure_port_flag());
        assert!(old.insecure_serving_port_flag() && !new.insecure_serving_port_flag());
        assert!(old.in_tree_aws_credentials() && !new.in_tree_aws_credentials());
        assert!(!old.kube_proxy_nftables() && new.kube_proxy_nftables());
        assert!(!old.kubelet_fail_cgroup_v1_field() && new.kubelet_fail_cgroup_v1_field());
    }
}
