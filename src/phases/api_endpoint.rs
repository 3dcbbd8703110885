//! The phases of an endpoint the control planes serve themselves (`crate::ha`): `vip` puts
//! keepalived on every control plane and waits until the VIP answers; `api-proxy` puts each
//! node's loopback load balancer in place before its kubelet needs it. Both re-render on every
//! node on `join`: a new control plane is a new VRRP peer and a new server.

use super::Phase;
use super::step::{After, Applied, Desired, Step};
use crate::cluster::{Cluster, Host};
use crate::ha::{self, api_proxy, vip};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, UnitSpec};
use crate::run::Ctx;
use crate::systemd;

pub fn vip_phase() -> Phase {
    Phase::step(
        "vip",
        "keepalived on the control planes: the API's VIP, on one whose API server is ready",
        VipStep,
    )
}

pub fn api_proxy_phase() -> Phase {
    Phase::step(
        "api-proxy",
        "haproxy on every node's loopback: its agents reach every ready API server",
        ApiProxy,
    )
}

/// An engine's files and its running unit, restarted when either file changes.
struct Engine<'a> {
    service: &'a str,
    dir: &'a str,
    config_path: &'a str,
    config: String,
    unit_path: &'a str,
    unit: String,
}

impl Engine<'_> {
    fn desired(self) -> Desired {
        vec![
            Action::dir(self.dir, 0o755),
            Action::file(self.config_path, self.config, 0o644),
            Action::file(self.unit_path, self.unit, 0o644),
            Action::Unit(UnitSpec {
                name: format!("{}.service", self.service),
                enabled: true,
                active: true,
                restart_when_changed: vec![self.config_path.into(), self.unit_path.into()],
            }),
        ]
        .into()
    }
}

struct VipStep;

#[async_trait::async_trait]
impl Step for VipStep {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, host: &Host) -> bool {
        ha::enabled(cluster) && host.control_plane
    }

    fn every_node_on_join(&self) -> bool {
        true
    }

    fn probes(&self, _: &Cluster, _: &Host) -> Vec<Probe> {
        vec![Probe::Uplink]
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        let Some(v) = &cluster.endpoint.vip else {
            return Ok(Desired::default());
        };
        let uplink = match &v.interface {
            Some(i) => i.clone(),
            None => observed.uplink()?.0,
        };
        Ok(Engine {
            service: vip::SERVICE,
            dir: vip::DIR,
            config_path: vip::CONFIG,
            config: vip::config(cluster, v, host, &uplink)?,
            unit_path: vip::UNIT,
            unit: vip::unit()?,
        }
        .desired())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        applied: &Applied<'_, ()>,
    ) -> Result<After, String> {
        if applied.changed {
            // a restarted keepalived hands the VIP on: connections through it now reach a host
            // that no longer holds it and are reset, so later phases open new ones
            crate::api::forget_connections(ctx).await;
        }
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let hint = format!(
            "no control plane holds {}: check `journalctl -u {}` on the control planes, that the VIP \
             is free and in their subnet, and that VRRP (IP protocol 112) passes between them",
            ctx.cluster.endpoint.host,
            vip::SERVICE
        );
        systemd::until_ready(
            &session,
            &host.name,
            &vip::answers_check(&ctx.cluster),
            60,
            vip::SERVICE,
            "serving the VIP",
            &hint,
        )
        .await?;
        Ok(After::default())
    }
}

struct ApiProxy;

#[async_trait::async_trait]
impl Step for ApiProxy {
    type Shared = ();

    fn applies_to(&self, cluster: &Cluster, _: &Host) -> bool {
        ha::enabled(cluster)
    }

    fn every_node_on_join(&self) -> bool {
        true
    }

    fn desired(
        &self,
        cluster: &Cluster,
        _: &Host,
        _: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        Ok(Engine {
            service: api_proxy::SERVICE,
            dir: api_proxy::DIR,
            config_path: api_proxy::CONFIG,
            config: api_proxy::config(cluster)?,
            unit_path: api_proxy::UNIT,
            unit: api_proxy::unit()?,
        }
        .desired())
    }

    async fn after(&self, ctx: &Ctx, host: &Host, _: &Applied<'_, ()>) -> Result<After, String> {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let hint = format!(
            "no API server answered through it: check `journalctl -u {}` and that the control \
             planes' port 6443 is reachable from {}",
            api_proxy::SERVICE,
            host.name
        );
        systemd::until_ready(
            &session,
            &host.name,
            &api_proxy::answers_check(),
            60,
            api_proxy::SERVICE,
            "reaching an API server",
            &hint,
        )
        .await?;
        Ok(After::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(endpoint: &str) -> Cluster {
        crate::cluster::from_text(&format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n{endpoint}  hosts:\n  - {{name: cp1, address: 10.0.0.11, roles: [control-plane]}}\n  - {{name: w1, address: 10.0.0.21, roles: [worker]}}\n"
        ))
    }

    #[test]
    fn keepalived_on_control_planes_and_haproxy_on_every_node_only_with_a_vip() -> Result<(), String>
    {
        let c = cluster("  controlPlaneEndpoint: {vip: 10.0.0.100}\n");
        let (cp, worker) = (&c.hosts[0], &c.hosts[1]);
        assert!(VipStep.applies_to(&c, cp) && !VipStep.applies_to(&c, worker));
        assert!(ApiProxy.applies_to(&c, cp) && ApiProxy.applies_to(&c, worker));
        let observed = Observed::with(&[Probe::Uplink]).set_uplink("eth0", 1500);
        let vip = VipStep.desired(&c, cp, &observed, &())?;
        let subjects: Vec<&str> = vip.actions.iter().map(|a| a.subject()).collect();
        assert_eq!(
            subjects,
            [vip::DIR, vip::CONFIG, vip::UNIT, "api-vip.service"]
        );
        let proxy = ApiProxy.desired(&c, worker, &Observed::default(), &())?;
        assert_eq!(proxy.actions.len(), 4);
        // without one, neither runs, and the nodes use the endpoint itself
        let plain = cluster("  controlPlaneEndpoint: 10.0.0.11:6443\n");
        assert!(!VipStep.applies_to(&plain, &plain.hosts[0]));
        assert!(!ApiProxy.applies_to(&plain, &plain.hosts[1]));
        assert_eq!(plain.node_api_url(), "https://10.0.0.11:6443");
        Ok(())
    }
}
