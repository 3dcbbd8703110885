//! containerd with the CRI plugin: systemd cgroup driver, the bundle's sandbox image, runc plus
//! the enabled sandbox runtimes (gVisor, Kata), registry mirrors; its unit, crictl's
//! configuration, and the bundle's images imported into the `k8s.io` namespace.

use super::{Images, Runtime, crictl_config};
use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, Leftovers, UnitSpec};
use crate::inventory::RuntimeClass;
use crate::render::render_typed;
use crate::ssh::shell_quote;
use crate::systemd::Unit;
use serde::Serialize;
use std::collections::BTreeMap;

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const UNIT: &str = "/etc/systemd/system/containerd.service";
pub const SOCKET: &str = "unix:///run/containerd/containerd.sock";

pub struct Containerd;

/// What `containerd-config.toml` is rendered from.
#[derive(Serialize)]
struct Config<'a> {
    sandbox_image: &'a str,
    restrict_oom_score_adj: bool,
    gvisor: bool,
    kata: bool,
    mirrors: &'a BTreeMap<String, Vec<String>>,
}

/// The label containerd's CRI reports as an image's `pinned`, which the kubelet never collects.
const PINNED: &str = "io.cri-containerd.pinned";

impl Runtime for Containerd {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn service(&self) -> &'static str {
        "containerd"
    }

    fn socket(&self) -> &'static str {
        SOCKET
    }

    fn config(&self) -> &'static str {
        CONFIG
    }

    fn components(&self, classes: &[RuntimeClass]) -> Vec<&'static str> {
        let mut c = vec!["containerd", "runc"];
        for rc in classes {
            match rc {
                RuntimeClass::Gvisor => {
                    c.extend(["gvisor-runsc", "gvisor-containerd-shim-runsc-v1"])
                }
                RuntimeClass::Kata => c.push("kata-static"),
            }
        }
        c
    }

    /// Whether runc may lower the pause container's oom_score_adj (not inside every container).
    fn probes(&self) -> Vec<Probe> {
        vec![Probe::Conditions]
    }

    fn actions(
        &self,
        cluster: &Cluster,
        _: &Host,
        observed: &Observed,
        images: &Images,
    ) -> Result<Vec<Action>, String> {
        let cond = observed.conditions()?;
        let classes = &cluster.runtime_classes;
        let config = Config {
            sandbox_image: &images.sandbox,
            restrict_oom_score_adj: !cond.can_lower_oom_score,
            gvisor: classes.contains(&RuntimeClass::Gvisor),
            kata: classes.contains(&RuntimeClass::Kata),
            mirrors: &cluster.registry_mirrors,
        };
        let unit = Unit::new("containerd container runtime", "/usr/local/bin/containerd")
            .after(&["network.target", "local-fs.target"])
            .exec_start_pre(&["-/sbin/modprobe overlay"])
            .args(&["--config", CONFIG])
            .service(&[
                ("Type", "notify"),
                ("Delegate", "yes"),
                ("KillMode", "process"),
                ("Restart", "always"),
                ("RestartSec", "5"),
                ("LimitNPROC", "infinity"),
                ("LimitCORE", "infinity"),
                ("LimitNOFILE", "infinity"),
                ("TasksMax", "infinity"),
                ("OOMScoreAdjust", "-999"),
            ]);
        let mut actions = vec![
            Action::dir("/etc/containerd", 0o755),
            Action::file(
                CONFIG,
                render_typed("containerd-config.toml", &config)?,
                0o644,
            ),
            Action::file(UNIT, unit.render()?, 0o644),
            crictl_config(SOCKET)?,
            Action::dir(crate::cni::NET_D, 0o755),
            Action::Unit(UnitSpec {
                name: "containerd.service".into(),
                enabled: true,
                active: true,
                restart_when_changed: vec![CONFIG.into(), UNIT.into()],
            }),
        ];
        actions.extend(import_images(&images.archives));
        Ok(actions)
    }

    /// One `crictl info` when the CRI answers already (a re-run); else wait for containerd,
    /// then ask the CRI.
    fn health_check(&self) -> String {
        format!("crictl info >/dev/null 2>&1 || {{ {WAIT_FOR_CONTAINERD} && {CRI_CHECK}; }}")
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            units: vec!["containerd".into()],
            paths: vec![
                "/var/lib/containerd".into(),
                "/run/containerd".into(),
                "/etc/containerd".into(),
                UNIT.into(),
            ],
            mounts: vec!["/var/lib/containerd".into(), "/run/containerd".into()],
            ..Leftovers::default()
        }
    }
}

/// The bundle's images imported and pinned, as one action: the list of pinned images is asked
/// once (a `ctr` call costs tens of milliseconds), and only the images it lacks are imported.
/// Pinned: the kubelet's image garbage collection (disk above 85 %) would delete an image no
/// pod uses, and a bundle's image may have no registry to come back from.
fn import_images(archives: &[(String, String)]) -> Option<Action> {
    if archives.is_empty() {
        return None;
    }
    let list = format!("ctr -n k8s.io images ls -q 'labels.\"{PINNED}\"==pinned'");
    let refs: Vec<&str> = archives.iter().map(|(_, r)| r.as_str()).collect();
    let has = |r: &str| format!("printf '%s\\n' \"$pinned\" | grep -Fqx {}", shell_quote(r));
    let imports: Vec<String> = archives
        .iter()
        .map(|(archive, r)| {
            format!(
                "{{ {} || {{ ctr -n k8s.io images import {} >/dev/null && ctr -n k8s.io images label {} {PINNED}=pinned >/dev/null; }}; }}",
                has(r),
                shell_quote(archive),
                shell_quote(r)
            )
        })
        .collect();
    let present: Vec<String> = refs.iter().map(|r| has(r)).collect();
    Some(Action::Exec {
        label: format!(
            "import image{} {}",
            if refs.len() > 1 { "s" } else { "" },
            refs.join(", ")
        ),
        cmd: format!(
            "{WAIT_FOR_CONTAINERD} && pinned=$({list}) && {}",
            imports.join(" && ")
        ),
        // ctr waits ~10 s for a containerd that is not running: ask only a live socket
        unless: format!(
            "[ -S /run/containerd/containerd.sock ] && pinned=$(timeout 5 {list}) && {}",
            present.join(" && ")
        ),
    })
}

/// containerd answers on its socket within 30 s of a (re)start.
const WAIT_FOR_CONTAINERD: &str = "i=0; until ctr version >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 60 ] && { echo 'containerd does not answer on its socket' >&2; exit 1; }; sleep 0.5; done";

/// Through crictl when it is a working binary, else the CRI plugin's status as containerd
/// reports it.
const CRI_CHECK: &str = "if crictl --version >/dev/null 2>&1; then crictl info >/dev/null; else ctr plugins ls | grep -E 'io\\.containerd\\.grpc\\.v1 +cri ' | grep -qw ok || { echo 'the CRI plugin is not ok' >&2; exit 1; }; fi";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_has_the_runtimes_and_the_oom_clamp_only_when_asked() -> Result<(), String>
    {
        let mirrors = BTreeMap::from([(
            "docker.io".to_string(),
            vec!["https://m.example.com".to_string()],
        )]);
        let mut config = Config {
            sandbox_image: "registry.k8s.io/pause:3.10.2",
            restrict_oom_score_adj: false,
            gvisor: true,
            kata: false,
            mirrors: &mirrors,
        };
        let text = render_typed("containerd-config.toml", &config)?;
        assert!(text.contains("SystemdCgroup = true"), "{text}");
        assert!(
            text.contains("runtimes.runsc]\n        runtime_type = \"io.containerd.runsc.v1\""),
            "{text}"
        );
        assert!(
            !text.contains("kata") && !text.contains("restrict_oom_score_adj"),
            "{text}"
        );
        assert!(
            text.contains("endpoint = [\"https://m.example.com\"]"),
            "{text}"
        );
        config.restrict_oom_score_adj = true;
        assert!(
            render_typed("containerd-config.toml", &config)?
                .contains("restrict_oom_score_adj = true")
        );
        Ok(())
    }
}
