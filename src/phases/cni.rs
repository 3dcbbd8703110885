//! The `cni` phase, built-in network: the upstream bridge, host-local, portmap and loopback
//! plugins with the node's pod CIDR, and routes to every other node's pod CIDR through that
//! node's address (nodes on one L2 segment), kept by a unit so they come back after a reboot.
//! Pod-to-pod traffic keeps its addresses; traffic leaving the pod range is masqueraded.

use super::step::Step;
use super::{Ctx, Phase, Work};
use crate::cluster::Host;
use crate::host::{Action, UnitSpec};
use crate::render::render;
use serde::Serialize;

pub const CONFLIST: &str = "/etc/cni/net.d/10-provision.conflist";
pub const ROUTES_SCRIPT: &str = "/usr/local/lib/provision/pod-routes.sh";
pub const ROUTES_UNIT: &str = "/etc/systemd/system/provision-pod-routes.service";

pub fn phase() -> Phase {
    Phase {
        name: "cni",
        summary: "pod network: bridge plugin with the node's pod CIDR, routes to the other nodes",
        work: Work::Step(Box::new(Cni)),
        children: Vec::new(),
    }
}

struct Cni;

#[derive(Serialize)]
struct Route {
    cidr: String,
    via: String,
}

#[async_trait::async_trait]
impl Step for Cni {
    async fn desired(&self, ctx: &Ctx, host: &Host) -> Result<Vec<Action>, String> {
        let cluster = &ctx.cluster;
        let gateway =
            host.pod_cidr.hosts().next().ok_or_else(|| {
                format!("pod CIDR {} has no address for a gateway", host.pod_cidr)
            })?;
        let mut t = tera::Context::new();
        t.insert("pod_cidr", &host.pod_cidr.to_string());
        t.insert("gateway", &gateway.to_string());
        let routes: Vec<Route> = cluster
            .hosts
            .iter()
            .filter(|h| h.name != host.name)
            .map(|h| Route {
                cidr: h.pod_cidr.to_string(),
                via: h.address.clone(),
            })
            .collect();
        t.insert("routes", &routes);
        t.insert("pod_subnet", &cluster.pod_subnet.to_string());
        let mut unit = tera::Context::new();
        unit.insert(
            "description",
            "provision: routes to the pod CIDRs of the other nodes",
        );
        unit.insert("after", &["network-online.target"]);
        unit.insert("wants", &["network-online.target"]);
        unit.insert("env", &Vec::<String>::new());
        unit.insert("exec_start_pre", &Vec::<String>::new());
        unit.insert("exec", &format!("/bin/sh {ROUTES_SCRIPT}"));
        unit.insert("args", &Vec::<String>::new());
        let service: std::collections::BTreeMap<&str, &str> =
            [("Type", "oneshot"), ("RemainAfterExit", "yes")].into();
        unit.insert("service", &service);
        Ok(vec![
            Action::dir("/etc/cni/net.d", 0o755),
            Action::file(CONFLIST, render("cni-bridge.conflist", &t), 0o644),
            Action::dir("/usr/local/lib/provision", 0o755),
            Action::file(ROUTES_SCRIPT, render("pod-routes.sh", &t), 0o755),
            Action::file(ROUTES_UNIT, render("component.service", &unit), 0o644),
            Action::Unit(UnitSpec {
                name: "provision-pod-routes.service".into(),
                enabled: true,
                active: true,
                restart_when_changed: vec![ROUTES_SCRIPT.into(), ROUTES_UNIT.into()],
            }),
        ])
    }
}
