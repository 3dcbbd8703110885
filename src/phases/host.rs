//! The `host` phase: what every node needs before any component: kernel modules and
//! parameters for pod networking, and the /etc/kubernetes tree.

use super::step::Pure;
use super::{Phase, Work};
use crate::cluster::{Cluster, Host};
use crate::host::Action;
use crate::paths;
use crate::render::render_typed;
use serde::Serialize;

pub const SYSCTL_FILE: &str = "/etc/sysctl.d/99-provision.conf";
pub const MODULES_FILE: &str = "/etc/modules-load.d/provision.conf";

/// Modules and the check that tells their feature is present (loaded or built in).
const MODULES: &[(&str, &str)] = &[
    ("overlay", "grep -qw overlay /proc/filesystems"),
    (
        "br_netfilter",
        "[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]",
    ),
];

#[derive(Serialize)]
struct Sysctl {
    key: &'static str,
    value: &'static str,
}

const SYSCTLS: &[Sysctl] = &[
    Sysctl {
        key: "net.ipv4.ip_forward",
        value: "1",
    },
    Sysctl {
        key: "net.bridge.bridge-nf-call-iptables",
        value: "1",
    },
    Sysctl {
        key: "net.bridge.bridge-nf-call-ip6tables",
        value: "1",
    },
];

pub fn phase() -> Phase {
    Phase {
        name: "host",
        summary: "kernel modules and parameters, the /etc/kubernetes tree",
        work: Work::Group,
        children: vec![
            Phase {
                name: "kernel",
                summary: "load overlay and br_netfilter (now and at boot); set forwarding sysctls",
                work: Work::Step(Box::new(Pure(kernel))),
                children: Vec::new(),
            },
            Phase {
                name: "dirs",
                summary: "create /etc/kubernetes, its pki directory and /opt/provision",
                work: Work::Step(Box::new(Pure(dirs))),
                children: Vec::new(),
            },
        ],
    }
}

/// What `modules-load.conf` and `sysctl.conf` are rendered from.
#[derive(Serialize)]
struct KernelFiles {
    modules: Vec<&'static str>,
    sysctls: &'static [Sysctl],
}

pub(crate) fn kernel(_: &Cluster, _: &Host) -> Result<Vec<Action>, String> {
    let ctx = KernelFiles {
        modules: MODULES.iter().map(|(m, _)| *m).collect(),
        sysctls: SYSCTLS,
    };
    let mut actions = vec![Action::file(
        MODULES_FILE,
        render_typed("modules-load.conf", &ctx)?,
        0o644,
    )];
    for (module, present) in MODULES {
        // modprobe fails on kernels without loadable modules even when the feature is built in:
        // only the feature check decides
        actions.push(Action::Exec {
            label: format!("load kernel module {module}"),
            cmd: format!("modprobe {module} 2>/dev/null; {present} || {{ echo 'the kernel has no {module} and modprobe could not load it' >&2; exit 1; }}"),
            unless: present.to_string(),
        });
    }
    actions.push(Action::file(
        SYSCTL_FILE,
        render_typed("sysctl.conf", &ctx)?,
        0o644,
    ));
    actions.extend(SYSCTLS.iter().map(|s| Action::sysctl(s.key, s.value)));
    Ok(actions)
}

pub(crate) fn dirs(_: &Cluster, host: &Host) -> Result<Vec<Action>, String> {
    let mut actions = vec![
        Action::dir(paths::KUBERNETES_DIR, 0o755),
        Action::dir(paths::PKI_DIR, 0o755),
        Action::dir("/opt/provision", 0o755),
    ];
    if host.control_plane {
        actions.push(Action::dir(paths::ETCD_PKI_DIR, 0o755));
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_file_lists_every_parameter() -> Result<(), String> {
        let ctx = KernelFiles {
            modules: vec!["overlay"],
            sysctls: SYSCTLS,
        };
        let text = render_typed("sysctl.conf", &ctx)?;
        assert!(text.contains("net.ipv4.ip_forward = 1\n"), "{text}");
        assert!(
            text.contains("net.bridge.bridge-nf-call-iptables = 1\n"),
            "{text}"
        );
        assert_eq!(
            render_typed("modules-load.conf", &ctx)?.lines().last(),
            Some("overlay")
        );
        Ok(())
    }
}
