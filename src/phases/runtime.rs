//! The `runtime` phase: containerd with the CRI plugin (systemd cgroup driver, the bundle's
//! sandbox image, runc plus the enabled sandbox runtimes, registry mirrors), its unit, crictl's
//! configuration, and the bundle's images imported into the `k8s.io` namespace.

use super::step::{self, Applied, Desired, Step};
use super::{Phase, Work};
use crate::bundle::plan::BundlePlan;
use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, UnitSpec};
use crate::inventory::{RuntimeClass, RuntimeName};
use crate::render::render;
use crate::run::Ctx;
use crate::ssh::shell_quote;
use std::sync::Arc;

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const UNIT: &str = "/etc/systemd/system/containerd.service";
pub const SOCKET: &str = "unix:///run/containerd/containerd.sock";

pub fn phase() -> Phase {
    Phase {
        name: "runtime",
        summary: "containerd (CRI, unit, crictl, the bundle's images) or CRI-O",
        work: Work::Step(Box::new(Runtime)),
        children: Vec::new(),
    }
}

struct Runtime;

#[async_trait::async_trait]
impl Step for Runtime {
    type Shared = Option<Arc<BundlePlan>>;

    fn probes(&self, _: &Cluster, _: &Host) -> Vec<Probe> {
        vec![Probe::Conditions]
    }

    async fn prepare(
        &self,
        ctx: &Ctx,
        _: &[(&Host, &Observed)],
    ) -> Result<Option<Arc<BundlePlan>>, String> {
        ctx.bundle_plan().await.map(Some)
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        plan: &Option<Arc<BundlePlan>>,
    ) -> Result<Desired, String> {
        let plan = plan.as_deref().ok_or("internal: no bundle plan")?;
        if cluster.runtime == RuntimeName::CriO {
            return crio_actions(cluster, host, plan).map(Desired::from);
        }
        let cond = observed.conditions()?;
        let mut t = tera::Context::new();
        t.insert("sandbox_image", &plan.sandbox_image(cluster, host)?);
        t.insert("restrict_oom_score_adj", &!cond.can_lower_oom_score);
        let classes = &cluster.runtime_classes;
        t.insert("gvisor", &classes.contains(&RuntimeClass::Gvisor));
        t.insert("kata", &classes.contains(&RuntimeClass::Kata));
        t.insert("mirrors", &cluster.registry_mirrors);
        let mut unit = tera::Context::new();
        unit.insert("description", "containerd container runtime");
        unit.insert("after", &["network.target", "local-fs.target"]);
        unit.insert("wants", &Vec::<String>::new());
        unit.insert("env", &Vec::<String>::new());
        unit.insert("exec_start_pre", &["-/sbin/modprobe overlay"]);
        unit.insert("exec", "/usr/local/bin/containerd");
        unit.insert("args", &["--config", CONFIG]);
        let service: Vec<(&str, &str)> = vec![
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
        ];
        unit.insert(
            "service",
            &service
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        let mut crictl = tera::Context::new();
        crictl.insert("endpoint", SOCKET);
        let mut actions = vec![
            Action::dir("/etc/containerd", 0o755),
            Action::file(CONFIG, render("containerd-config.toml", &t), 0o644),
            Action::file(UNIT, render("component.service", &unit), 0o644),
            Action::file("/etc/crictl.yaml", render("crictl.yaml", &crictl), 0o644),
            Action::dir("/etc/cni/net.d", 0o755),
            Action::Unit(UnitSpec {
                name: "containerd.service".into(),
                enabled: true,
                active: true,
                restart_when_changed: vec![CONFIG.into(), UNIT.into()],
            }),
        ];
        for (archive, image_ref) in plan.images(host)? {
            let r = shell_quote(&image_ref);
            actions.push(Action::Exec {
                label: format!("import image {image_ref}"),
                cmd: format!(
                    "{WAIT_FOR_CONTAINERD} && ctr -n k8s.io images import {} >/dev/null",
                    shell_quote(&archive)
                ),
                // ctr waits ~10 s for a containerd that is not running: ask only a live socket
                unless: format!(
                    "[ -S /run/containerd/containerd.sock ] && timeout 5 ctr -n k8s.io images ls -q | grep -Fqx {r}"
                ),
            });
        }
        Ok(actions.into())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        // the CRI must answer: the kubelet talks to nothing else
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let (unit, check, config) = match ctx.cluster.runtime {
            RuntimeName::Containerd => (
                "containerd",
                format!("{WAIT_FOR_CONTAINERD} && {CRI_CHECK}"),
                CONFIG,
            ),
            RuntimeName::CriO => (
                "crio",
                format!(
                    "i=0; until crictl --runtime-endpoint {CRIO_SOCKET} info >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 60 ] && {{ crictl --runtime-endpoint {CRIO_SOCKET} info >&2; exit 1; }}; sleep 0.5; done"
                ),
                CRIO_CONFIG,
            ),
        };
        let out = session
            .exec(&check, None)
            .await
            .map_err(|e| e.to_string())?;
        if out.status != 0 {
            let journal = session
                .exec(
                    &format!("journalctl -u {unit} --no-pager -n 15 -o cat"),
                    None,
                )
                .await
                .map(|o| o.stdout_text())
                .unwrap_or_default();
            return Err(format!(
                "{unit}'s CRI is not serving on {}: {}\nlast lines of its journal:\n{journal}check {config} and `journalctl -u {unit}`",
                socket(ctx.cluster.runtime),
                out.stderr_text().trim()
            ));
        }
        Ok(step::After::default())
    }
}

pub const CRIO_CONFIG: &str = "/etc/crio/crio.conf.d/10-provision.conf";
pub const CRIO_UNIT: &str = "/etc/systemd/system/crio.service";
pub const CRIO_SOCKET: &str = "unix:///var/run/crio/crio.sock";
pub const CRIO_REGISTRIES: &str = "/etc/containers/registries.conf.d/10-provision.conf";
const CRIO_POLICY: &str = "/etc/containers/policy.json";

/// The CRI endpoint the kubelet and crictl use.
/// The systemd unit of a runtime (the kubelet starts after it).
pub fn unit_name(runtime: RuntimeName) -> &'static str {
    match runtime {
        RuntimeName::Containerd => "containerd.service",
        RuntimeName::CriO => "crio.service",
    }
}

pub fn socket(runtime: RuntimeName) -> &'static str {
    match runtime {
        RuntimeName::Containerd => SOCKET,
        RuntimeName::CriO => CRIO_SOCKET,
    }
}

/// CRI-O: its drop-in configuration (systemd cgroups, crun, the sandbox runtimes, the pause
/// image), registry mirrors, an image policy, the unit and crictl. It imports no image archives:
/// with CRI-O, images come from a registry or a mirror.
fn crio_actions(cluster: &Cluster, host: &Host, plan: &BundlePlan) -> Result<Vec<Action>, String> {
    let classes = &cluster.runtime_classes;
    let mut t = tera::Context::new();
    t.insert("sandbox_image", &plan.sandbox_image(cluster, host)?);
    t.insert("kata", &classes.contains(&RuntimeClass::Kata));
    t.insert("mirrors", &cluster.registry_mirrors);
    let mut unit = tera::Context::new();
    unit.insert("description", "CRI-O container runtime");
    unit.insert("after", &["network-online.target"]);
    unit.insert("wants", &["network-online.target"]);
    unit.insert("env", &Vec::<String>::new());
    unit.insert("exec_start_pre", &Vec::<String>::new());
    unit.insert("exec", "/usr/local/bin/crio");
    unit.insert("args", &Vec::<String>::new());
    let service: std::collections::BTreeMap<&str, &str> = [
        ("Type", "notify"),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("LimitNOFILE", "1048576"),
        ("LimitNPROC", "1048576"),
        ("TasksMax", "infinity"),
        ("OOMScoreAdjust", "-999"),
    ]
    .into();
    unit.insert("service", &service);
    let mut crictl = tera::Context::new();
    crictl.insert("endpoint", CRIO_SOCKET);
    let actions = vec![
        Action::dir("/etc/crio", 0o755),
        Action::dir("/etc/crio/crio.conf.d", 0o755),
        Action::file(CRIO_CONFIG, render("crio.conf", &t), 0o644),
        Action::dir("/etc/containers", 0o755),
        Action::dir("/etc/containers/registries.conf.d", 0o755),
        Action::file(CRIO_REGISTRIES, render("registries.conf", &t), 0o644),
        // accept images as pulled (the default of the distributions' packages)
        Action::file(
            CRIO_POLICY,
            "{\"default\": [{\"type\": \"insecureAcceptAnything\"}]}\n",
            0o644,
        ),
        Action::file(CRIO_UNIT, render("component.service", &unit), 0o644),
        Action::file("/etc/crictl.yaml", render("crictl.yaml", &crictl), 0o644),
        Action::dir("/etc/cni/net.d", 0o755),
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

/// containerd answers on its socket within 30 s of a (re)start.
const WAIT_FOR_CONTAINERD: &str = "i=0; until ctr version >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 60 ] && { echo 'containerd does not answer on its socket' >&2; exit 1; }; sleep 0.5; done";

/// Through crictl when it is a working binary, else the CRI plugin's status as containerd
/// reports it.
const CRI_CHECK: &str = "if crictl --version >/dev/null 2>&1; then crictl info >/dev/null; else ctr plugins ls | grep -E 'io\\.containerd\\.grpc\\.v1 +cri ' | grep -qw ok || { echo 'the CRI plugin is not ok' >&2; exit 1; }; fi";

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("i.yaml");
        std::fs::write(&file, format!("apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n{spec}  hosts:\n  - {{name: n1, address: 192.168.7.20, roles: [control-plane]}}\n")).unwrap();
        let loaded = crate::inventory::load(&file).unwrap();
        let (cluster, _) = crate::cluster::resolve(&loaded).unwrap();
        cluster
    }

    fn file<'a>(actions: &'a [Action], path: &str) -> &'a str {
        actions
            .iter()
            .find_map(|a| match a {
                Action::File(f) if f.path == path => std::str::from_utf8(&f.content).ok(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {path}"))
    }

    #[test]
    fn cri_o_gets_systemd_cgroups_its_runtimes_the_pause_image_and_mirrors() {
        let cluster = cluster(
            "  kubernetesVersion: 1.36.4\n  runtime:\n    name: cri-o\n    runtimeClasses: [kata]\n    registryMirrors: {docker.io: [https://mirror.example.com]}\n",
        );
        let host = cluster.hosts[0].clone();
        let plan = BundlePlan::resolve(&cluster).unwrap();
        let actions = crio_actions(&cluster, &host, &plan).unwrap();
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
    }

    #[test]
    fn containerd_config_has_the_runtimes_and_the_oom_clamp_only_when_asked() {
        let mut t = tera::Context::new();
        t.insert("sandbox_image", "registry.k8s.io/pause:3.10.2");
        t.insert("restrict_oom_score_adj", &false);
        t.insert("gvisor", &true);
        t.insert("kata", &false);
        t.insert(
            "mirrors",
            &std::collections::BTreeMap::from([("docker.io", vec!["https://m.example.com"])]),
        );
        let text = render("containerd-config.toml", &t);
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
        t.insert("restrict_oom_score_adj", &true);
        assert!(render("containerd-config.toml", &t).contains("restrict_oom_score_adj = true"));
    }
}
