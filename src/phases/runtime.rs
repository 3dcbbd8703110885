//! The `runtime` phase: containerd with the CRI plugin (systemd cgroup driver, the bundle's
//! sandbox image, runc plus the enabled sandbox runtimes, registry mirrors), its unit, crictl's
//! configuration, and the bundle's images imported into the `k8s.io` namespace.

use super::step::{self, Step};
use super::{Ctx, Phase, Work};
use crate::cluster::Host;
use crate::host::{Action, UnitSpec};
use crate::inventory::{RuntimeClass, RuntimeName};
use crate::render::render;
use crate::ssh::shell_quote;

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const UNIT: &str = "/etc/systemd/system/containerd.service";
pub const SOCKET: &str = "unix:///run/containerd/containerd.sock";

pub fn phase() -> Phase {
    Phase {
        name: "runtime",
        summary: "containerd: CRI configuration, unit, crictl, the bundle's images",
        work: Work::Step(Box::new(Runtime)),
        children: Vec::new(),
    }
}

struct Runtime;

#[async_trait::async_trait]
impl Step for Runtime {
    async fn desired(&self, ctx: &Ctx, host: &Host) -> Result<Vec<Action>, String> {
        if ctx.cluster.runtime == RuntimeName::CriO {
            return Err(
                "runtime cri-o is not provided by this version of provision; use containerd".into(),
            );
        }
        let cond = step::conditions(ctx, host).await?;
        let plan = step::bundle_plan(ctx).await?;
        let mut t = tera::Context::new();
        t.insert("sandbox_image", &plan.sandbox_image(ctx, host)?);
        t.insert("restrict_oom_score_adj", &!cond.can_lower_oom_score);
        let classes = &ctx.cluster.runtime_classes;
        t.insert("gvisor", &classes.contains(&RuntimeClass::Gvisor));
        t.insert("kata", &classes.contains(&RuntimeClass::Kata));
        t.insert("mirrors", &ctx.cluster.registry_mirrors);
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
        Ok(actions)
    }

    async fn after(&self, ctx: &Ctx, host: &Host, _changed: bool) -> Result<step::After, String> {
        // the CRI plugin must be up: the kubelet talks to nothing else
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let out = session
            .exec(&format!("{WAIT_FOR_CONTAINERD} && {CRI_CHECK}"), None)
            .await
            .map_err(|e| e.to_string())?;
        if out.status != 0 {
            let journal = session
                .exec("journalctl -u containerd --no-pager -n 15 -o cat", None)
                .await
                .map(|o| o.stdout_text())
                .unwrap_or_default();
            return Err(format!(
                "containerd's CRI plugin is not serving on {SOCKET}: {}\nlast lines of its journal:\n{journal}check {CONFIG} and `journalctl -u containerd`",
                out.stderr_text().trim()
            ));
        }
        Ok(step::After::default())
    }
}

/// containerd answers on its socket within 30 s of a (re)start.
const WAIT_FOR_CONTAINERD: &str = "i=0; until ctr version >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 60 ] && { echo 'containerd does not answer on its socket' >&2; exit 1; }; sleep 0.5; done";

/// Through crictl when it is a working binary, else the CRI plugin's status as containerd
/// reports it.
const CRI_CHECK: &str = "if crictl --version >/dev/null 2>&1; then crictl info >/dev/null; else ctr plugins ls | grep -E 'io\\.containerd\\.grpc\\.v1 +cri ' | grep -qw ok || { echo 'the CRI plugin is not ok' >&2; exit 1; }; fi";
