//! CRI-O: its drop-in configuration (systemd cgroups, crun, the sandbox runtimes, the pause
//! image), registry mirrors, an image policy, the unit and crictl. It imports no image
//! archives: with CRI-O, images come from a registry or a mirror.

use super::{Images, Runtime, crictl_config};
use crate::cluster::{Cluster, Host};
use crate::host::probe::Observed;
use crate::host::{Action, Leftovers, UnitSpec};
use crate::inventory::RuntimeClass;
use crate::render::render_typed;
use crate::systemd::Unit;
use serde::Serialize;
use std::collections::BTreeMap;

pub const CRIO_CONFIG: &str = "/etc/crio/crio.conf.d/10-provision.conf";
pub const CRIO_UNIT: &str = "/etc/systemd/system/crio.service";
pub const CRIO_SOCKET: &str = "unix:///var/run/crio/crio.sock";
pub const CRIO_REGISTRIES: &str = "/etc/containers/registries.conf.d/10-provision.conf";
const CRIO_POLICY: &str = "/etc/containers/policy.json";

pub struct CriO;

/// What `crio.conf` and `registries.conf` are rendered from.
#[derive(Serialize)]
struct Config<'a> {
    sandbox_image: &'a str,
    kata: bool,
    mirrors: &'a BTreeMap<String, Vec<String>>,
}

impl Runtime for CriO {
    fn name(&self) -> &'static str {
        "cri-o"
    }

    fn service(&self) -> &'static str {
        "crio"
    }

    fn socket(&self) -> &'static str {
        CRIO_SOCKET
    }

    fn config(&self) -> &'static str {
        CRIO_CONFIG
    }

    fn components(&self, classes: &[RuntimeClass]) -> Vec<&'static str> {
        let mut c = vec!["cri-o", "crun"];
        for rc in classes {
            match rc {
                RuntimeClass::Gvisor => c.push("gvisor-runsc"),
                RuntimeClass::Kata => c.push("kata-static"),
            }
        }
        c
    }

    fn actions(
        &self,
        cluster: &Cluster,
        _: &Host,
        _: &Observed,
        images: &Images,
    ) -> Result<Vec<Action>, String> {
        let classes = &cluster.runtime_classes;
        let t = Config {
            sandbox_image: &images.sandbox,
            kata: classes.contains(&RuntimeClass::Kata),
            mirrors: &cluster.registry_mirrors,
        };
        let unit = Unit::new("CRI-O container runtime", "/usr/local/bin/crio")
            .after(&["network.target", "local-fs.target"])
            .service(&[
                ("Type", "notify"),
                ("Restart", "on-failure"),
                ("RestartSec", "5"),
                ("LimitNOFILE", "1048576"),
                ("LimitNPROC", "1048576"),
                ("TasksMax", "infinity"),
                ("OOMScoreAdjust", "-999"),
            ]);
        let actions = vec![
            Action::dir("/etc/crio", 0o755),
            Action::dir("/etc/crio/crio.conf.d", 0o755),
            Action::file(CRIO_CONFIG, render_typed("crio.conf", &t)?, 0o644),
            Action::dir("/etc/containers", 0o755),
            Action::dir("/etc/containers/registries.conf.d", 0o755),
            Action::file(CRIO_REGISTRIES, render_typed("registries.conf", &t)?, 0o644),
            // accept images as pulled (the default of the distributions' packages)
            Action::file(
                CRIO_POLICY,
                "{\"default\": [{\"type\": \"insecureAcceptAnything\"}]}\n",
                0o644,
            ),
            Action::file(CRIO_UNIT, unit.render()?, 0o644),
            crictl_config(CRIO_SOCKET)?,
            Action::dir(crate::cni::NET_D, 0o755),
            Action::Unit(UnitSpec {
                name: "crio.service".into(),
                enabled: true,
                active: true,
                restart_when_changed: vec![
                    CRIO_CONFIG.into(),
                    CRIO_REGISTRIES.into(),
                    CRIO_UNIT.into(),
                ],
            }),
        ];
        Ok(actions)
    }

    fn health_check(&self) -> String {
        format!(
            "i=0; until crictl --runtime-endpoint {CRIO_SOCKET} info >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 60 ] && {{ crictl --runtime-endpoint {CRIO_SOCKET} info >&2; exit 1; }}; sleep 0.5; done"
        )
    }

    /// Shared system files such as /etc/containers/policy.json and the image store stay.
    fn leftovers(&self) -> Leftovers {
        Leftovers {
            units: vec!["crio".into()],
            paths: vec![CRIO_CONFIG.into(), CRIO_REGISTRIES.into(), CRIO_UNIT.into()],
            ..Leftovers::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;
    use crate::runtime::tests::{cluster, file};

    #[test]
    fn cri_o_gets_systemd_cgroups_its_runtimes_the_pause_image_and_mirrors() -> R {
        let cluster = cluster(
            "  kubernetesVersion: 1.36.4\n  runtime:\n    name: cri-o\n    runtimeClasses: [kata]\n    registryMirrors: {docker.io: [https://mirror.example.com]}\n",
        );
        let host = cluster.hosts[0].clone();
        let plan = crate::bundle::plan::BundlePlan::resolve(&cluster)?;
        let images = Images {
            sandbox: plan.sandbox_image(&cluster, &host)?,
            archives: Vec::new(),
        };
        let actions = CriO.actions(&cluster, &host, &Observed::default(), &images)?;
        let conf = file(&actions, CRIO_CONFIG);
        for want in [
            "cgroup_manager = \"systemd\"",
            "default_runtime = \"crun\"",
            "runtime_path = \"/usr/local/bin/containerd-shim-kata-v2\"",
            "pause_image = \"registry.k8s.io/pause:3.10.2\"",
            "plugin_dirs = [\"/opt/cni/bin/\"]",
        ] {
            assert!(conf.contains(want), "{want} missing:\n{conf}");
        }
        assert!(!conf.contains("runsc"), "{conf}");
        let reg = file(&actions, CRIO_REGISTRIES);
        assert!(
            reg.contains(
                "location = \"docker.io\"\n[[registry.mirror]]\nlocation = \"mirror.example.com\""
            ),
            "{reg}"
        );
        assert!(file(&actions, "/etc/crictl.yaml").contains(CRIO_SOCKET));
        assert!(file(&actions, CRIO_UNIT).contains("ExecStart=/usr/local/bin/crio"));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Unit(u) if u.name == "crio.service" && u.active))
        );
        Ok(())
    }
}
