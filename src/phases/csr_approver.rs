//! The `csr-approver` phase: on every control plane, the approver of the kubelets' serving
//! certificate requests (`crate::approver`), run by provision's own binary as a unit, so a
//! kubelet that rotates its serving certificate months later gets the new one without any
//! provision run. Its ServiceAccount, rights and token Secret are made by `bootstrap`.
//!
//! The binary is the one running this phase, so it runs on a host only when that host is a
//! Linux machine of the same architecture; elsewhere the phase says so, and the kubelets'
//! requests are approved by the `kubelet` phase of each provision run only.

use super::step::{After, Applied, Desired, Step};
use super::{Phase, Work};
use crate::api;
use crate::approver::{KUBECONFIG, NAMESPACE, SERVICE, SERVICE_ACCOUNT, TOKEN_SECRET, UNIT};
use crate::cluster::{Cluster, Host};
use crate::host::action::LocalContent;
use crate::host::probe::Observed;
use crate::host::{Action, UnitSpec};
use crate::pki::{CaKind, kubeconfig};
use crate::run::Ctx;
use crate::systemd::{self, Unit};

pub fn phase() -> Phase {
    Phase {
        name: "csr-approver",
        summary: "approve the kubelets' serving certificate renewals on every control plane",
        work: Work::Step(Box::new(CsrApprover)),
        children: Vec::new(),
    }
}

struct CsrApprover;

/// Where provision's binary goes on a control plane: versioned, so an old unit keeps its file.
fn binary_path() -> String {
    format!(
        "/opt/provision/provision/{}/provision",
        env!("CARGO_PKG_VERSION")
    )
}

/// What every control plane gets: the approver's kubeconfig (None in a dry run before its token
/// exists) and this binary, when it can run there.
#[derive(Default)]
pub struct Shared {
    kubeconfig: Option<String>,
    binary: Option<LocalContent>,
}

/// This binary, read and hashed once per process. Hashing tens of MiB costs tens of
/// milliseconds, so a run that has this phase starts it at once, beside its other work
/// (`warm_up`), and the phase finds it done.
static THIS_BINARY: std::sync::LazyLock<Result<Option<LocalContent>, String>> =
    std::sync::LazyLock::new(read_this_binary);

fn this_binary() -> Result<Option<LocalContent>, String> {
    THIS_BINARY.clone()
}

/// This binary, hashed to be shipped; None when it is not a Linux program.
fn read_this_binary() -> Result<Option<LocalContent>, String> {
    use sha2::{Digest, Sha256};
    if std::env::consts::OS != "linux" {
        return Ok(None);
    }
    let path = std::env::current_exe().map_err(|e| format!("finding provision's binary: {e}"))?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(LocalContent {
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        path,
    }))
}

#[async_trait::async_trait]
impl Step for CsrApprover {
    type Shared = Shared;

    fn applies_to(&self, _: &Cluster, host: &Host) -> bool {
        host.control_plane
    }

    /// A control plane whose approver was stopped or removed gets it back on the next `join`.
    fn every_node_on_join(&self) -> bool {
        true
    }

    /// This binary is read and hashed in the background from the start of the run.
    fn warm_up(&self) {
        std::thread::spawn(|| std::sync::LazyLock::force(&THIS_BINARY));
    }

    async fn prepare(&self, ctx: &Ctx, _: &[(&Host, &Observed)]) -> Result<Shared, String> {
        let binary = this_binary()?;
        let Some(token) = api::service_account_token(ctx, NAMESPACE, TOKEN_SECRET).await? else {
            return Ok(Shared {
                kubeconfig: None,
                binary,
            });
        };
        let ca = ctx.ca(CaKind::Kubernetes, false).await?;
        let c = &ctx.cluster;
        let kubeconfig = kubeconfig::render_token(
            &c.name,
            &format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
            &c.node_api_url(),
            &ca.cert_pem,
            &token,
        )?;
        Ok(Shared {
            kubeconfig: Some(kubeconfig),
            binary,
        })
    }

    fn desired(
        &self,
        _: &Cluster,
        host: &Host,
        _: &Observed,
        shared: &Shared,
    ) -> Result<Desired, String> {
        let binary = match &shared.binary {
            Some(b) if std::env::consts::ARCH == host.arch.uname_m() => b.clone(),
            _ => {
                return Ok(Desired {
                    actions: Vec::new(),
                    notes: vec![format!(
                        "no approver on {}: provision runs here on {}/{}, the host is linux/{}; \
                         kubelet serving certificates are approved only while provision runs \
                         (run it from a Linux {} machine to install the approver)",
                        host.name,
                        std::env::consts::OS,
                        std::env::consts::ARCH,
                        host.arch.uname_m(),
                        host.arch.uname_m()
                    )],
                });
            }
        };
        let path = binary_path();
        let dir = path
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or("/opt/provision");
        let unit = Unit::new(
            "provision: approves the kubelets' serving certificate requests",
            &path,
        )
        .after(&["network.target"])
        .args(&[format!("approve-kubelet-serving --kubeconfig={KUBECONFIG}")])
        .service(&[("Restart", "always"), ("RestartSec", "5")]);
        Ok(vec![
            Action::dir("/opt/provision/provision", 0o755),
            Action::dir(dir, 0o755),
            Action::local_file(&path, binary, 0o755),
            Action::secret_file(KUBECONFIG, shared.kubeconfig.clone().unwrap_or_default()),
            Action::file(UNIT, unit.render()?, 0o644),
            Action::Unit(UnitSpec {
                name: format!("{SERVICE}.service"),
                enabled: true,
                active: true,
                restart_when_changed: vec![KUBECONFIG.into(), UNIT.into(), path.clone()],
            }),
        ]
        .into())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Shared>,
    ) -> Result<After, String> {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        // it says so in its journal once it has read its kubeconfig and the API
        let ready = format!(
            "journalctl -u {SERVICE} -b --no-pager -q | grep -q 'approving the kubelets' && systemctl is-active --quiet {SERVICE}"
        );
        systemd::until_ready(
            &session,
            &host.name,
            &ready,
            30,
            SERVICE,
            "running",
            &format!("check `journalctl -u {SERVICE}`"),
        )
        .await?;
        Ok(After::default())
    }
}
