//! What the cluster is made of: per Kubernetes minor, the version of every component; per
//! component, where upstream publishes it, how it is packaged, what a host installs from it,
//! and the digests pinned here. Facts from the upstream release records.

pub mod digest;

use crate::inventory::Arch;

use digest::Digest;

/// How upstream ships a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// The download is the executable itself.
    File,
    TarGz,
    TarZst,
    /// Pulled by the runtime from a registry; only a bundle directory carries it as an OCI archive.
    Image,
}

/// What a host gets from a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Executables linked into /usr/local/bin. For an archive, the members with these names
    /// (the first `required` of them must be present); for a plain download, its one name.
    Bin {
        names: &'static [&'static str],
        required: usize,
    },
    /// Every file of the archive, linked into /opt/cni/bin.
    CniPlugins,
    /// The archive's tree under `root`, reached through a symlink at `link`, with some of its
    /// executables also linked into /usr/local/bin.
    Tree {
        root: &'static str,
        link: &'static str,
        bin: &'static [&'static str],
    },
    /// An OCI image archive, placed in /var/lib/provision/images for the runtime to import.
    Image,
}

pub struct Component {
    pub name: &'static str,
    pub url: &'static str,
    pub packaging: Packaging,
    pub install: Install,
}

const fn bin(names: &'static [&'static str]) -> Install {
    Install::Bin {
        names,
        required: names.len(),
    }
}

/// Every component the catalog knows, in install order.
pub const COMPONENTS: &[Component] = &[
    Component {
        name: "kube-apiserver",
        url: "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kube-apiserver",
        packaging: Packaging::File,
        install: bin(&["kube-apiserver"]),
    },
    Component {
        name: "kube-controller-manager",
        url: "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kube-controller-manager",
        packaging: Packaging::File,
        install: bin(&["kube-controller-manager"]),
    },
    Component {
        name: "kube-scheduler",
        url: "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kube-scheduler",
        packaging: Packaging::File,
        install: bin(&["kube-scheduler"]),
    },
    Component {
        name: "kubelet",
        url: "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kubelet",
        packaging: Packaging::File,
        install: bin(&["kubelet"]),
    },
    Component {
        name: "kube-proxy",
        url: "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kube-proxy",
        packaging: Packaging::File,
        install: bin(&["kube-proxy"]),
    },
    Component {
        name: "kubectl",
        url: "https://dl.k8s.io/release/v{version}/bin/linux/{arch}/kubectl",
        packaging: Packaging::File,
        install: bin(&["kubectl"]),
    },
    Component {
        name: "etcd",
        url: "https://github.com/etcd-io/etcd/releases/download/v{version}/etcd-v{version}-linux-{arch}.tar.gz",
        packaging: Packaging::TarGz,
        install: Install::Bin {
            names: &["etcd", "etcdctl", "etcdutl"],
            required: 2,
        },
    },
    Component {
        name: "containerd",
        url: "https://github.com/containerd/containerd/releases/download/v{version}/containerd-{version}-linux-{arch}.tar.gz",
        packaging: Packaging::TarGz,
        install: bin(&["containerd", "containerd-shim-runc-v2", "ctr"]),
    },
    Component {
        name: "runc",
        url: "https://github.com/opencontainers/runc/releases/download/v{version}/runc.{arch}",
        packaging: Packaging::File,
        install: bin(&["runc"]),
    },
    Component {
        name: "crun",
        url: "https://github.com/containers/crun/releases/download/{version}/crun-{version}-linux-{arch}",
        packaging: Packaging::File,
        install: bin(&["crun"]),
    },
    Component {
        name: "cni-plugins",
        url: "https://github.com/containernetworking/plugins/releases/download/v{version}/cni-plugins-linux-{arch}-v{version}.tgz",
        packaging: Packaging::TarGz,
        install: Install::CniPlugins,
    },
    Component {
        name: "crictl",
        url: "https://github.com/kubernetes-sigs/cri-tools/releases/download/v{version}/crictl-v{version}-linux-{arch}.tar.gz",
        packaging: Packaging::TarGz,
        install: bin(&["crictl"]),
    },
    Component {
        name: "cri-o",
        url: "https://storage.googleapis.com/cri-o/artifacts/cri-o.{arch}.v{version}.tar.gz",
        packaging: Packaging::TarGz,
        install: bin(&["crio", "pinns", "conmon"]),
    },
    Component {
        name: "kata-static",
        url: "https://github.com/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.tar.zst",
        packaging: Packaging::TarZst,
        install: Install::Tree {
            root: "opt/kata",
            link: "/opt/kata",
            bin: &["bin/containerd-shim-kata-v2"],
        },
    },
    Component {
        name: "gvisor-runsc",
        url: "https://storage.googleapis.com/gvisor/releases/release/{version}/{uname_m}/runsc",
        packaging: Packaging::File,
        install: bin(&["runsc"]),
    },
    Component {
        name: "gvisor-containerd-shim-runsc-v1",
        url: "https://storage.googleapis.com/gvisor/releases/release/{version}/{uname_m}/containerd-shim-runsc-v1",
        packaging: Packaging::File,
        install: bin(&["containerd-shim-runsc-v1"]),
    },
    // the NetworkPolicy engine of the built-in network: kube-router with its firewall
    // controller only (its release archive holds the one binary)
    Component {
        name: "kube-router",
        url: "https://github.com/cloudnativelabs/kube-router/releases/download/v{version}/kube-router_{version}_linux_{arch}.tar.gz",
        packaging: Packaging::TarGz,
        install: bin(&["kube-router"]),
    },
    Component {
        name: "pause",
        url: "registry.k8s.io/pause:{version}",
        packaging: Packaging::Image,
        install: Install::Image,
    },
    Component {
        name: "coredns",
        url: "registry.k8s.io/coredns/coredns:v{version}",
        packaging: Packaging::Image,
        install: Install::Image,
    },
    // the image of `provision verify`'s test pods (busybox: sh, httpd, wget, nslookup)
    Component {
        name: "busybox",
        url: "registry.k8s.io/e2e-test-images/busybox:{version}",
        packaging: Packaging::Image,
        install: Install::Image,
    },
];

pub fn component(name: &str) -> Option<&'static Component> {
    COMPONENTS.iter().find(|c| c.name == name)
}

/// The components a Kubernetes minor comes with, by version.
pub struct Release {
    pub minor: u32,
    pub kubernetes: &'static str,
    pub etcd: &'static str,
    pub pause: &'static str,
    pub coredns: &'static str,
    pub crictl: &'static str,
    /// CRI-O follows Kubernetes' minor; None where no release of it is pinned.
    pub cri_o: Option<&'static str>,
}

pub const RELEASES: &[Release] = &[
    Release {
        minor: 35,
        kubernetes: "1.35.8",
        etcd: "3.6.14",
        pause: "3.10.1",
        coredns: "1.12.4",
        crictl: "1.35.0",
        cri_o: Some("1.35.6"),
    },
    Release {
        minor: 36,
        kubernetes: "1.36.4",
        etcd: "3.6.14",
        pause: "3.10.2",
        coredns: "1.14.2",
        crictl: "1.36.0",
        cri_o: Some("1.36.3"),
    },
    // etcd: the release records 3.7.0; 3.6 is kept (the API server of 1.37 supports it, kubeadm
    // accepts 3.5.24 and newer), as 3.7's digests are not pinned here and 3.7 drops the
    // `--experimental-*` flags that 3.6 still reads. crictl 1.36.0 is the release's record.
    Release {
        minor: 37,
        kubernetes: "1.37.2",
        etcd: "3.6.14",
        pause: "3.10.2",
        coredns: "1.14.6",
        crictl: "1.36.0",
        cri_o: None,
    },
];

/// Versions shared by every catalog minor.
pub const CONTAINERD: &str = "2.3.4";
pub const RUNC: &str = "1.4.3";
pub const CRUN: &str = "1.17";
pub const CNI_PLUGINS: &str = "1.9.1";
pub const KATA: &str = "3.32.0";
pub const GVISOR: &str = "20260817.0";
pub const BUSYBOX: &str = "1.36.1-1";
/// The newest the Go module proxy serves (see docs/ARCHITECTURE.md for its advisories).
pub const KUBE_ROUTER: &str = "2.1.0";

/// The network add-ons applied through the API, by the images their manifests name (pulled by
/// the runtime from the registry or its mirror).
pub const FLANNEL: &str = "0.27.4";
pub const FLANNEL_CNI_PLUGIN: &str = "1.8.0-flannel1";
pub const CALICO: &str = "3.30.3";
pub const CILIUM: &str = "1.18.2";

pub fn release(minor: u32) -> Option<&'static Release> {
    RELEASES.iter().find(|r| r.minor == minor)
}

/// The catalog's version of `component` for a Kubernetes version, or None where the catalog
/// has none (CRI-O for 1.37, anything for a minor outside the catalog).
pub fn default_version(component: &str, kube: &crate::version::Version) -> Option<String> {
    if is_kube(component) {
        return Some(kube.to_string());
    }
    let r = release(kube.minor)?;
    let v = match component {
        "etcd" => r.etcd,
        "pause" => r.pause,
        "coredns" => r.coredns,
        "crictl" => r.crictl,
        "cri-o" => r.cri_o?,
        "containerd" => CONTAINERD,
        "runc" => RUNC,
        "crun" => CRUN,
        "cni-plugins" => CNI_PLUGINS,
        "kata-static" => KATA,
        "gvisor-runsc" | "gvisor-containerd-shim-runsc-v1" => GVISOR,
        "busybox" => BUSYBOX,
        "kube-router" => KUBE_ROUTER,
        _ => return None,
    };
    Some(v.to_string())
}

/// The binaries released with Kubernetes itself (their version is the cluster's).
pub fn is_kube(component: &str) -> bool {
    matches!(
        component,
        "kube-apiserver"
            | "kube-controller-manager"
            | "kube-scheduler"
            | "kubelet"
            | "kube-proxy"
            | "kubectl"
    )
}

/// Digests pinned here: (component, arch, version, digest).
const PINS: &[(&str, Arch, &str, &str)] = &[
    (
        "kubelet",
        Arch::Amd64,
        "1.36.4",
        "sha256:cf2562db46c48ab84cc3791540778ee7fb1a0a008529adbb434723dd02ed8b4b",
    ),
    (
        "kubelet",
        Arch::Amd64,
        "1.35.8",
        "sha256:6971b9f95e54dbed67a2271abe6e78f8cc2894494649f3cf39e4b25a82dca923",
    ),
    (
        "kubelet",
        Arch::Arm64,
        "1.36.4",
        "sha256:fd53ea3fcbd077844f50a3c67e9b52f62972a563674956bab0c0f4fb7ea37d50",
    ),
    (
        "kubelet",
        Arch::Arm64,
        "1.35.8",
        "sha256:7744f84c49df6dff7d0a0471f9acef31568c02459659de83aa279cf3a04b1714",
    ),
    (
        "kubectl",
        Arch::Amd64,
        "1.36.4",
        "sha256:8b8f088da2dab964f853b38464033b1be15ede2839eca751482357c45abdd05a",
    ),
    (
        "kubectl",
        Arch::Amd64,
        "1.35.8",
        "sha256:874d5e72dbb819f43cff16bcd1e4f8bac5b7f2361fe1e55049b0a6c676fb0cbf",
    ),
    (
        "kubectl",
        Arch::Arm64,
        "1.36.4",
        "sha256:0ecf44450ee6063bf19dd166a103ee6df4a9034455c2abce626e6eea657d73fb",
    ),
    (
        "kubectl",
        Arch::Arm64,
        "1.35.8",
        "sha256:cc749967b62f4422260bc9c0aa7a7c55f45175ae38cb8d95767b5d2b7e04c1fd",
    ),
    (
        "etcd",
        Arch::Amd64,
        "3.6.14",
        "sha256:ffe840ff9295808e88cce2794a18a5ac87f12a5203c8314d0bf6aa119b41bac5",
    ),
    (
        "etcd",
        Arch::Arm64,
        "3.6.14",
        "sha256:fa1b80565ee6fc2df1ae6f57a508b221f3ecc7d591c317c581cd8281b0842b3e",
    ),
    (
        "cni-plugins",
        Arch::Amd64,
        "1.9.1",
        "sha256:b98f74a0f8522f0a83867178729c1aa70f2158f90c45a2ca8fa791db1c76b303",
    ),
    (
        "cni-plugins",
        Arch::Arm64,
        "1.9.1",
        "sha256:56171987d3947707c3563db2f4001bccaf50fd63468611b9f3cbecb1375ee7ec",
    ),
    (
        "runc",
        Arch::Amd64,
        "1.4.3",
        "sha256:f6ae8efc0fa40079e1475e97cbe9d1bd3f106a28d6af78a11d9f1bd565515e60",
    ),
    (
        "runc",
        Arch::Arm64,
        "1.4.3",
        "sha256:633301e2e32f8a5ad54031aab4901eb00308bec677dd15faa2751e8f9dab5ca4",
    ),
    (
        "crun",
        Arch::Amd64,
        "1.17",
        "sha256:e9512a3e034e781b2396d068fd24eafcd5788e410403da886df9dc8871d504a5",
    ),
    (
        "crun",
        Arch::Arm64,
        "1.17",
        "sha256:3049017b99208f5ecd15c1366f47a77dace87f42dccf317ad40a07f1a867518c",
    ),
    (
        "containerd",
        Arch::Amd64,
        "2.3.4",
        "sha256:9d68969855fbf676cdb8ed758e420fb048d61f984f61de3e53eddfebe484d168",
    ),
    (
        "containerd",
        Arch::Arm64,
        "2.3.4",
        "sha256:a985fbb7e18fc0362d31a055338f5d7b0e087a3e27f14c70d1c5965399a29f95",
    ),
    (
        "crictl",
        Arch::Amd64,
        "1.36.0",
        "sha256:83855e114566a8a8c44c548d515670f51de3a5e1da8b2effb59870e2f10c25a3",
    ),
    (
        "crictl",
        Arch::Amd64,
        "1.35.0",
        "sha256:2e141e5b22cb189c40365a11807d69b76b9b3caced89fac2f4ec879408ce2177",
    ),
    (
        "crictl",
        Arch::Arm64,
        "1.36.0",
        "sha256:68328594ccf780a80ae2b092d9f6ce484eec7cf540c275242e8fd954bfd95332",
    ),
    (
        "crictl",
        Arch::Arm64,
        "1.35.0",
        "sha256:519071de89b64c43e2a1661bb5489c6c3fd5e9e5fcef75e50e542b0c891f1118",
    ),
    (
        "cri-o",
        Arch::Amd64,
        "1.36.3",
        "sha256:fc2ece7cc22a505cca5e100438e4e58f7786f17b64467022e2d2019239c88349",
    ),
    (
        "cri-o",
        Arch::Amd64,
        "1.35.6",
        "sha256:481c1de44de8a71dc299b3605c7b5f6044f656207cf5d39c14d4c840653bb7f5",
    ),
    (
        "cri-o",
        Arch::Arm64,
        "1.36.3",
        "sha256:749e5e5393a09ec93af6723410cf3554fb4b3b2fd7df2cb36a9acc427c3392cf",
    ),
    (
        "cri-o",
        Arch::Arm64,
        "1.35.6",
        "sha256:90142d24760afe66fd082a58d2ce752f01aef58b5a2bb96e03dca23e96cff834",
    ),
    (
        "kata-static",
        Arch::Amd64,
        "3.32.0",
        "sha256:1449ecea50bd91fa73a94648db195d18950fe869ba4b1f12d05f55f1fa7c1b01",
    ),
    (
        "kata-static",
        Arch::Arm64,
        "3.32.0",
        "sha256:8736c054d9223974735394f822000823baef509e1c33405ec798240fa9b6e4b5",
    ),
    (
        "gvisor-runsc",
        Arch::Amd64,
        "20260817.0",
        "sha512:84936438d583ec976800f464e75a83e1515f0890b451b9b4db219c4472b54ca9b106a6772ee683f1e64cce2128871d7637b14d800591f8451b8137f6c39fb2ef",
    ),
    (
        "gvisor-runsc",
        Arch::Arm64,
        "20260817.0",
        "sha512:6394fd161a4af0dc9a2c29f75c3016d05275a55744f124e12023fa7666a9f161c68d6ce3803ad49205c6a7b5bee0ad2ccf48edff340db344fdafec678c788aa4",
    ),
    (
        "gvisor-containerd-shim-runsc-v1",
        Arch::Amd64,
        "20260817.0",
        "sha512:b60d1c418b841ab046951cc7a91f490a221198fbe81ec55dc364432578fddd44e97063793ce6651be397af2f64ec47170dff77a45db277819c3fb08fec9f3ced",
    ),
    (
        "gvisor-containerd-shim-runsc-v1",
        Arch::Arm64,
        "20260817.0",
        "sha512:a7c0147f635938225e41c9660b95ba5235121a142c11830794e2a52b472783547e2b089bdba4f1344d30f65aeee651b377a1cafadd262a134f5e1ac10c6bf4bb",
    ),
];

/// The digest pinned here for a component's download, if any.
pub fn pinned(component: &str, arch: Arch, version: &str) -> Option<Digest> {
    PINS.iter()
        .find(|(c, a, v, _)| *c == component && *a == arch && *v == version)
        // every pin parses (a unit test checks them all)
        .and_then(|(_, _, _, d)| Digest::parse(d).ok())
}

impl Component {
    /// The upstream URL (or image reference) of this component's download.
    pub fn url_for(&self, version: &str, arch: Arch) -> String {
        self.url
            .replace("{version}", version)
            .replace("{arch}", &arch.to_string())
            .replace("{uname_m}", arch.uname_m())
    }

    /// Upstream publishes `<url>.sha256` beside these (the kube binaries).
    pub fn has_published_sha256(&self) -> bool {
        self.url.starts_with("https://dl.k8s.io/")
    }

    /// The checksums file (`sha256sum` lines for every archive of a release) upstream
    /// publishes beside this download, where it publishes one: goreleaser's default name.
    pub fn checksums_url(&self, version: &str) -> Option<String> {
        match self.name {
            "kube-router" => Some(format!(
                "https://github.com/cloudnativelabs/kube-router/releases/download/v{version}/kube-router_{version}_checksums.txt"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;

    #[test]
    fn every_pinned_digest_is_well_formed_and_names_a_known_component()
    -> Result<(), Box<dyn std::error::Error>> {
        for (c, _, _, d) in PINS {
            assert!(component(c).is_some(), "pin for unknown component {c}");
            let (algo, hex) = d
                .split_once(':')
                .ok_or(format!("pin of {c}: {d} is not ALGO:HEX"))?;
            let len = match algo {
                "sha256" => 64,
                "sha512" => 128,
                other => panic!("{c}: unknown digest algorithm {other}"),
            };
            assert_eq!(hex.len(), len, "{c}: {d}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            // `pinned` drops a pin it cannot parse: every one must parse
            assert!(Digest::parse(d).is_ok(), "{c}: {d}");
        }
        Ok(())
    }

    #[test]
    fn every_url_renders_for_both_arches() -> Result<(), Box<dyn std::error::Error>> {
        for minor in [35, 36, 37] {
            let kube = Version::parse(&format!("1.{minor}"))?;
            for c in COMPONENTS {
                let Some(v) = default_version(c.name, &kube) else {
                    assert_eq!((c.name, minor), ("cri-o", 37), "no version for {}", c.name);
                    continue;
                };
                for arch in Arch::ALL {
                    let url = c.url_for(&v, arch);
                    assert!(!url.contains('{'), "{url}");
                    assert!(url.contains(&v), "{url} lacks the version");
                    if c.packaging != Packaging::Image {
                        assert!(url.starts_with("https://"), "{url}");
                        let arch_word = if c.url.contains("{uname_m}") {
                            arch.uname_m().to_string()
                        } else {
                            arch.to_string()
                        };
                        assert!(url.contains(&arch_word), "{url} lacks {arch_word}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn every_catalog_download_outside_dl_k8s_io_is_pinned() -> Result<(), Box<dyn std::error::Error>>
    {
        for minor in [35, 36, 37] {
            let kube = Version::parse(&format!("1.{minor}"))?;
            for c in COMPONENTS
                .iter()
                .filter(|c| c.packaging != Packaging::Image)
            {
                let Some(v) = default_version(c.name, &kube) else {
                    continue;
                };
                for arch in Arch::ALL {
                    assert!(
                        pinned(c.name, arch, &v).is_some()
                            || c.has_published_sha256()
                            || c.checksums_url(&v).is_some(),
                        "{} {v} {arch}: neither pinned nor published beside its download",
                        c.name
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn urls_match_the_published_layout() -> Result<(), String> {
        let etcd = component("etcd").ok_or("etcd is not in the catalog")?;
        assert_eq!(
            etcd.url_for("3.6.14", Arch::Arm64),
            "https://github.com/etcd-io/etcd/releases/download/v3.6.14/etcd-v3.6.14-linux-arm64.tar.gz"
        );
        let runsc = component("gvisor-runsc").ok_or("gvisor-runsc is not in the catalog")?;
        assert_eq!(
            runsc.url_for(GVISOR, Arch::Amd64),
            "https://storage.googleapis.com/gvisor/releases/release/20260817.0/x86_64/runsc"
        );
        assert_eq!(
            component("kubelet")
                .ok_or("kubelet is not in the catalog")?
                .url_for("1.36.4", Arch::Amd64),
            "https://dl.k8s.io/release/v1.36.4/bin/linux/amd64/kubelet"
        );
        Ok(())
    }
}
