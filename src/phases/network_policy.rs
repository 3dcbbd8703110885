//! The `network-policy` phase: kube-router's firewall on every node of a network without a
//! policy engine of its own (`spec.cni.networkPolicy`). Its ServiceAccount, rights and token
//! Secret are made by the `bootstrap` phase; this one writes a kubeconfig with that token on
//! the node, the unit, and waits until the engine has read the API and hooked its chains.

use super::step::{After, Applied, Desired, Step};
use super::{Phase, Work};
use crate::api;
use crate::cluster::{Cluster, Host};
use crate::cni::policy_engine::{self, KUBECONFIG, NAMESPACE, SERVICE, TOKEN_SECRET};
use crate::host::probe::Observed;
use crate::host::{Action, UnitSpec};
use crate::pki::CaKind;
use crate::pki::kubeconfig;
use crate::run::Ctx;
use crate::systemd;

pub fn phase() -> Phase {
    Phase {
        name: "network-policy",
        summary: "kube-router's firewall on every node: NetworkPolicy for the built-in network",
        work: Work::Step(Box::new(NetworkPolicy)),
        children: Vec::new(),
    }
}

struct NetworkPolicy;

#[async_trait::async_trait]
impl Step for NetworkPolicy {
    /// The engine's kubeconfig (None in a dry run before its token exists).
    type Shared = Option<String>;

    fn applies_to(&self, cluster: &Cluster, _: &Host) -> bool {
        policy_engine::enabled(cluster)
    }

    /// A node whose engine was stopped gets it back on the next `join`.
    fn every_node_on_join(&self) -> bool {
        true
    }

    async fn prepare(&self, ctx: &Ctx, _: &[(&Host, &Observed)]) -> Result<Self::Shared, String> {
        let Some(token) = api::service_account_token(ctx, NAMESPACE, TOKEN_SECRET).await? else {
            return Ok(None);
        };
        let ca = ctx.ca(CaKind::Kubernetes, false).await?;
        let c = &ctx.cluster;
        kubeconfig::render_token(
            &c.name,
            &format!(
                "system:serviceaccount:{NAMESPACE}:{}",
                policy_engine::SERVICE_ACCOUNT
            ),
            &c.node_api_url(),
            &ca.cert_pem,
            &token,
        )
        .map(Some)
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        _: &Observed,
        kubeconfig: &Option<String>,
    ) -> Result<Desired, String> {
        Ok(vec![
            Action::dir(policy_engine::DIR, 0o700),
            Action::secret_file(KUBECONFIG, kubeconfig.clone().unwrap_or_default()),
            Action::file(
                policy_engine::UNIT,
                policy_engine::unit(cluster, host)?,
                0o644,
            ),
            Action::Unit(UnitSpec {
                name: format!("{SERVICE}.service"),
                enabled: true,
                active: true,
                restart_when_changed: vec![KUBECONFIG.into(), policy_engine::UNIT.into()],
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
        // FORWARD jumps to its chain once it has read the API and put its rules in place
        let ready = policy_engine::enforcing_check();
        let hint = format!("check `journalctl -u {SERVICE}`");
        systemd::until_ready(
            &session,
            &host.name,
            &ready,
            60,
            SERVICE,
            "enforcing policies",
            &hint,
        )
        .await?;
        Ok(After::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> Cluster {
        crate::cluster::from_text(&format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec:\n  controlPlaneEndpoint: 192.168.7.11:6443\n  cni:\n    name: builtin\n{extra}  hosts:\n  - {{name: n1, address: 192.168.7.11, roles: [control-plane]}}\n  - {{name: n2, address: 192.168.7.12, roles: [worker]}}\n"
        ))
    }

    #[test]
    fn every_node_gets_its_kubeconfig_0600_and_a_firewall_only_unit() -> Result<(), String> {
        let c = cluster("");
        let host = &c.hosts[1];
        assert!(NetworkPolicy.applies_to(&c, host));
        let d = NetworkPolicy.desired(&c, host, &Observed::default(), &Some("config".into()))?;
        let kubeconfig = d
            .actions
            .iter()
            .find(|a| a.subject() == KUBECONFIG)
            .ok_or("no kubeconfig")?;
        match kubeconfig {
            Action::File(f) => assert!(f.mode == 0o600 && f.secret),
            other => return Err(format!("the kubeconfig is {other:?}")),
        }
        let unit = policy_engine::unit(&c, host)?;
        for want in [
            "--kubeconfig=/etc/kubernetes/network-policies/kubeconfig",
            "--hostname-override=n2",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            "--service-cluster-ip-range=10.96.0.0/12",
            "Restart=always",
            // the routing rule for Services without endpoints; its failure is not the unit's
            "ExecStartPre=-/bin/sh -c 'while ip -4 rule del pref 32100 2>/dev/null; do :; done; ip -4 rule add pref 32100 from 10.244.0.0/16 to 10.96.0.0/12 unreachable'",
        ] {
            assert!(unit.contains(want), "{want} not in\n{unit}");
        }
        Ok(())
    }

    #[test]
    fn turned_off_it_acts_on_no_host() {
        let c = cluster("    networkPolicy: false\n");
        assert!(!NetworkPolicy.applies_to(&c, &c.hosts[0]));
    }
}
