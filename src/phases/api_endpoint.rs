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

fn unit_action(service: &str, unit: &str, config: &str) -> Action {
    Action::Unit(UnitSpec {
        name: format!("{service}.service"),
        enabled: true,
        active: true,
        restart_when_changed: vec![config.into(), unit.into()],
    })
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
        Ok(vec![
            Action::dir(vip::DIR, 0o755),
            Action::file(vip::CONFIG, vip::config(cluster, v, host, &uplink)?, 0o644),
            Action::file(vip::UNIT, vip::unit()?, 0o644),
            unit_action(vip::SERVICE, vip::UNIT, vip::CONFIG),
        ]
        .into())
    }

    async fn after(&self, ctx: &Ctx, host: &Host, _: &Applied<'_, ()>) -> Result<After, String> {
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
        Ok(vec![
            Action::dir(api_proxy::DIR, 0o755),
            Action::file(api_proxy::CONFIG, api_proxy::config(cluster)?, 0o644),
            Action::file(api_proxy::UNIT, api_proxy::unit()?, 0o644),
            unit_action(api_proxy::SERVICE, api_proxy::UNIT, api_proxy::CONFIG),
        ]
        .into())
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
