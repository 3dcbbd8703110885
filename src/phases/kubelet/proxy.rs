//! The `kube-proxy` phase: its configuration (nftables where the host has `nft`, else iptables)
//! and unit, with the kubeconfig of `kubeconfig/kube-proxy`; then a wait for its health port.

use super::*;

pub(super) const PROXY_CONFIG: &str = "/var/lib/kube-proxy/config.yaml";

pub const PROXY_UNIT: &str = "/etc/systemd/system/kube-proxy.service";

pub fn kube_proxy_phase() -> Phase {
    Phase {
        name: "kube-proxy",
        summary: "kube-proxy on every node: Services through iptables (nftables from 1.33)",
        work: Work::Step(Box::new(KubeProxy)),
        children: Vec::new(),
    }
}

pub(crate) struct KubeProxy;

/// What `kube-proxy-config.yaml` is rendered from.
#[derive(Serialize)]
struct ProxyConfig<'a> {
    mode: &'a str,
    pod_subnet: String,
    node_name: &'a str,
    conntrack_read_only: bool,
}

#[async_trait::async_trait]
impl Step for KubeProxy {
    type Shared = ();

    fn probes(&self, _: &Cluster, _: &Host) -> Vec<Probe> {
        vec![Probe::Conditions]
    }

    fn desired(
        &self,
        c: &Cluster,
        host: &Host,
        observed: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        let cond = observed.conditions()?;
        let mode = if cond.has_nft { "nftables" } else { "iptables" };
        let t = ProxyConfig {
            mode,
            pod_subnet: c.pod_subnet.to_string(),
            node_name: &host.name,
            conntrack_read_only: !cond.conntrack_writable,
        };
        let args = vec![format!("--config={PROXY_CONFIG}")];
        let unit = unit_text(
            "kube-proxy: Services on this node",
            "/usr/local/bin/kube-proxy",
            &args,
            // it binds the wildcard address and reads the node's from its Node
            "network.target",
        )?;
        Ok(vec![
            Action::dir("/var/lib/kube-proxy", 0o755),
            Action::file(
                PROXY_CONFIG,
                render_typed("kube-proxy-config.yaml", &t)?,
                0o644,
            ),
            Action::file(PROXY_UNIT, unit, 0o644),
            Action::Unit(UnitSpec {
                name: "kube-proxy.service".into(),
                enabled: true,
                active: true,
                restart_when_changed: vec![
                    PROXY_CONFIG.into(),
                    PROXY_UNIT.into(),
                    KubeconfigKind::KubeProxy.path(),
                ],
            }),
        ]
        .into())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        // healthz on 10256 answers once the rules are programmed
        let ready = "systemctl is-active -q kube-proxy && ss -Hltn 'sport = :10256' | grep -q .";
        let hint = format!("check {PROXY_CONFIG} and `journalctl -u kube-proxy`");
        systemd::until_ready(
            &session,
            &host.name,
            ready,
            40,
            "kube-proxy",
            "running",
            &hint,
        )
        .await?;
        Ok(After::default())
    }
}
