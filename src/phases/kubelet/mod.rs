//! The `kubelet` phase (every node, control planes too): KubeletConfiguration, the unit, and on
//! nodes that have no credentials yet a bootstrap kubeconfig with a fresh token (TLS bootstrap);
//! then a bounded wait until the Node is Ready, or the reason it is not. The `kube-proxy` phase:
//! its configuration and unit, with the kubeconfig of `kubeconfig/kube-proxy`.

use super::step::{After, Applied, Desired, Step};
use super::{Phase, Work};
use crate::api::client;
use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, UnitSpec};
use crate::pki::CaKind;
use crate::pki::kubeconfig::KubeconfigKind;
use crate::pki::token::BootstrapToken;
use crate::render::render_typed;
use crate::run::Ctx;
use crate::runtime;
use crate::systemd::{self, Unit};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

pub use proxy::{PROXY_UNIT, kube_proxy_phase};
use serving::approve_serving_certificate;

pub(crate) mod proxy;
mod serving;

pub const STATE_DIR: &str = "/var/lib/kubelet";
pub const CONFIG: &str = "/var/lib/kubelet/config.yaml";
pub const UNIT: &str = "/etc/systemd/system/kubelet.service";
pub use crate::paths::{BOOTSTRAP_KUBECONFIG, KUBELET_KUBECONFIG as KUBECONFIG};
/// The kubelet's client certificate (and key), which it rotates itself while it can.
pub const CLIENT_CERT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
const READY_WAIT: Duration = Duration::from_secs(180);
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

pub fn kubelet_phase() -> Phase {
    Phase {
        name: "kubelet",
        summary: "kubelet on every node (TLS bootstrap on joining ones); wait for Node Ready",
        work: Work::Step(Box::new(Kubelet)),
        children: Vec::new(),
    }
}

pub(crate) struct Kubelet;

/// A node component's unit: restarted whenever it exits, after `after`, and pulling it in
/// when it is a unit (a target such as network.target is reached on its own).
fn unit_text(
    description: &str,
    exec: &str,
    args: &[String],
    after: &str,
) -> Result<String, String> {
    let unit = Unit::new(description, exec);
    let unit = if after.ends_with(".target") {
        unit.after(&[after])
    } else {
        unit.after_and_wants(&[after])
    };
    unit.args(args)
        .service(&[("Restart", "always"), ("RestartSec", "2")])
        .render()
}

/// A bootstrap kubeconfig: the cluster CA, the endpoint and a token of the node bootstrappers.
fn bootstrap_kubeconfig(
    cluster: &Cluster,
    ca_pem: &str,
    token: &BootstrapToken,
) -> Result<String, String> {
    crate::pki::kubeconfig::render_token(
        &cluster.name,
        "tls-bootstrap-token-user",
        &cluster.node_api_url(),
        ca_pem,
        &token.expose(),
    )
}

/// What nodes without credentials of their own join with (TLS bootstrap): one token per run,
/// valid one day, and the cluster CA for those that do not hold it yet. None when every node
/// has its credentials.
#[derive(Default)]
pub(crate) struct Bootstrap {
    token: Option<BootstrapToken>,
    cluster_ca: Option<String>,
}

/// What `kubelet-config.yaml` is rendered from.
#[derive(Serialize)]
struct KubeletConfig<'a> {
    dns_ip: String,
    dns_domain: &'a str,
    server_tls_bootstrap: bool,
    runtime_endpoint: &'a str,
    fail_swap_on: bool,
    allow_cgroup_v1: bool,
    /// signal -> threshold; empty when the kubelet keeps its defaults
    eviction_hard: BTreeMap<&'a str, &'a str>,
}

/// Whether the node has credentials of its own that still work: its kubeconfig, and the
/// client certificate the kubelet rotates not expired. An expired one the kubelet cannot renew
/// (a node shut down past its expiry): it bootstraps again with a token, as when it joined.
fn has_credentials(observed: &Observed) -> Result<bool, String> {
    if observed
        .file(KUBECONFIG)?
        .is_none_or(|k| k.iter().all(u8::is_ascii_whitespace))
    {
        return Ok(false);
    }
    let Some(pem) = observed.file_text(CLIENT_CERT)? else {
        return Ok(true);
    };
    let left = super::expiration::first_certificate(&pem)
        .and_then(|c| crate::pki::expiry(&c).ok())
        .map(|(seconds, _, _)| seconds);
    Ok(left.is_some_and(|s| s > 0))
}

/// `kubeconfig` with every cluster's server set to `server`; None when each names it already.
fn with_server(kubeconfig: &str, server: &str) -> Result<Option<String>, String> {
    let mut config: serde_yaml::Value = serde_yaml::from_str(kubeconfig)
        .map_err(|e| format!("{KUBECONFIG} is not a kubeconfig ({e}): remove it, and this run bootstraps the kubelet again"))?;
    let mut moved = false;
    if let Some(clusters) = config
        .get_mut("clusters")
        .and_then(serde_yaml::Value::as_sequence_mut)
    {
        for c in clusters {
            if let Some(cluster) = c
                .get_mut("cluster")
                .and_then(serde_yaml::Value::as_mapping_mut)
                && cluster.get("server").and_then(serde_yaml::Value::as_str) != Some(server)
            {
                cluster.insert("server".into(), server.into());
                moved = true;
            }
        }
    }
    if !moved {
        return Ok(None);
    }
    serde_yaml::to_string(&config)
        .map(Some)
        .map_err(|e| format!("writing {KUBECONFIG}: {e}"))
}

/// The cluster CA on a node.
use crate::paths::CA_CERT as NODE_CA;

#[async_trait::async_trait]
impl Step for Kubelet {
    type Shared = Bootstrap;

    fn probes(&self, _: &Cluster, _: &Host) -> Vec<Probe> {
        vec![
            Probe::Conditions,
            Probe::File(KUBECONFIG.into()),
            Probe::File(NODE_CA.into()),
            Probe::File(CLIENT_CERT.into()),
        ]
    }

    /// A token (its Secret created, except in a dry run) when a node lacks credentials, and
    /// the cluster CA when such a node lacks it too.
    async fn prepare(
        &self,
        ctx: &Ctx,
        observed: &[(&Host, &Observed)],
    ) -> Result<Bootstrap, String> {
        let mut needs_token = false;
        let mut needs_ca = false;
        for (_, o) in observed {
            if !has_credentials(o)? {
                needs_token = true;
                needs_ca |= o.file(NODE_CA)?.is_none();
            }
        }
        if !needs_token {
            return Ok(Bootstrap::default());
        }
        let token = BootstrapToken::generate(Duration::from_secs(24 * 3600));
        if !ctx.dry_run() {
            let secrets: Api<Secret> = Api::namespaced(client(ctx, "admin").await?, "kube-system");
            secrets
                .create(&PostParams::default(), &token.secret(SystemTime::now()))
                .await
                .map_err(|e| format!("creating the bootstrap token: {e}"))?;
        }
        let cluster_ca = if needs_ca {
            Some(ctx.ca(CaKind::Kubernetes, false).await?.cert_pem)
        } else {
            None
        };
        Ok(Bootstrap {
            token: Some(token),
            cluster_ca,
        })
    }

    fn desired(
        &self,
        c: &Cluster,
        host: &Host,
        observed: &Observed,
        bootstrap: &Bootstrap,
    ) -> Result<Desired, String> {
        let cond = observed.conditions()?;
        let t = KubeletConfig {
            dns_ip: c.dns_service_ip.to_string(),
            dns_domain: &c.dns_domain,
            // a serving certificate from the cluster CA, rotated like the client's (approved
            // in `serving`)
            server_tls_bootstrap: true,
            runtime_endpoint: runtime::of(c.runtime).socket(),
            fail_swap_on: !cond.swap_on,
            // the preflight warns about cgroup v1; a kubelet that would refuse it is told not to
            allow_cgroup_v1: cond.cgroup_v1,
            eviction_hard: if c.eviction.customized {
                c.eviction
                    .hard
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            } else {
                BTreeMap::new()
            },
        };
        let mut args = vec![
            format!("--config={CONFIG}"),
            format!("--kubeconfig={KUBECONFIG}"),
            format!("--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}"),
            format!("--node-ip={}", host.address),
            format!("--hostname-override={}", host.name),
        ];
        let mut taints = host.taints.clone();
        if host.control_plane && !host.worker {
            taints.push(format!("{CONTROL_PLANE_ROLE}:NoSchedule"));
        }
        if !taints.is_empty() {
            args.push(format!("--register-with-taints={}", taints.join(",")));
        }
        if !host.labels.is_empty() {
            let labels: Vec<String> = host
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            args.push(format!("--node-labels={}", labels.join(",")));
        }
        let unit = unit_text(
            "kubelet: the Kubernetes node agent",
            "/usr/local/bin/kubelet",
            &args,
            &runtime::unit_name(c.runtime),
        )?;
        let mut actions = vec![
            Action::dir(STATE_DIR, 0o700),
            Action::dir(crate::paths::MANIFESTS_DIR, 0o755),
            Action::file(CONFIG, render_typed("kubelet-config.yaml", &t)?, 0o644),
            Action::file(UNIT, unit, 0o644),
        ];
        // a node without credentials of its own joins with a token (TLS bootstrap)
        if !has_credentials(observed)? {
            let ca = match observed.file_text(NODE_CA)? {
                Some(ca) => ca,
                None => bootstrap
                    .cluster_ca
                    .clone()
                    .ok_or("internal: no cluster CA for a joining node")?,
            };
            let token = bootstrap
                .token
                .as_ref()
                .ok_or("internal: no bootstrap token for a joining node")?;
            actions.push(Action::file(NODE_CA, ca.clone(), 0o644));
            actions.push(Action::secret_file(
                BOOTSTRAP_KUBECONFIG,
                bootstrap_kubeconfig(c, &ca, token)?,
            ));
        }
        // a new bootstrap kubeconfig: the kubelet bootstraps again (its certificate expired)
        let mut restart_when_changed =
            vec![CONFIG.into(), UNIT.into(), BOOTSTRAP_KUBECONFIG.into()];
        // the kubeconfig a worker's kubelet wrote when it bootstrapped names the API server of
        // that day: it follows the cluster's endpoint (a control plane restored elsewhere). The
        // kubelet writes that file after it starts, so it is an input only when rewritten here.
        if !host.control_plane
            && has_credentials(observed)?
            && let Some(text) = observed.file_text(KUBECONFIG)?
            && let Some(moved) = with_server(&text, &c.node_api_url())?
        {
            actions.push(Action::secret_file(KUBECONFIG, moved));
            restart_when_changed.push(KUBECONFIG.into());
        }
        actions.push(Action::Unit(UnitSpec {
            name: "kubelet.service".into(),
            enabled: true,
            active: true,
            restart_when_changed,
        }));
        Ok(actions.into())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<After, String> {
        let nodes: Api<Node> = Api::all(client(ctx, "admin").await?);
        let started = Instant::now();
        let mut last = String::from("the Node has not registered");
        let on_hosts = !crate::cni::of(ctx.cluster.cni).runs_as_pods();
        let mut notes = Vec::new();
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        // a kubelet that exits as it starts (a flag, a device or a file it needs) is said at once
        let mut crashes = systemd::CrashWatch::new(&session, &host.name, "kubelet");
        loop {
            if let Some(node) = nodes.get_opt(&host.name).await.map_err(|e| e.to_string())? {
                set_pod_cidr(&nodes, &node, host).await?;
                if !on_hosts {
                    // a CNI that runs as pods is applied by the addons phase, later
                    notes.push(format!(
                        "node {} registered; it turns Ready once {:?} runs on it",
                        host.name, ctx.cluster.cni
                    ));
                    break;
                }
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .cloned();
                match ready {
                    Some(c) if c.status == "True" => break,
                    Some(c) => {
                        last = format!(
                            "Ready is {}: {} {}",
                            c.status,
                            c.reason.unwrap_or_default(),
                            c.message.unwrap_or_default()
                        )
                    }
                    None => last = "the Node reports no Ready condition yet".into(),
                }
            }
            crashes.check().await?;
            if started.elapsed() > READY_WAIT {
                let journal = systemd::state_and_journal(&session, "kubelet", 12).await;
                return Err(format!(
                    "node {} is not Ready after {} s: {last}\nkubelet:\n{journal}check the runtime (`crictl info`), the CNI configuration in /etc/cni/net.d and `journalctl -u kubelet`",
                    host.name,
                    READY_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(crate::api::poll_pause(started)).await;
        }
        let mut after = After {
            notes,
            ..After::default()
        };
        approve_serving_certificate(ctx, host, &mut after).await?;
        if host.control_plane {
            let node = nodes.get(&host.name).await.map_err(|e| e.to_string())?;
            let labelled = node
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(CONTROL_PLANE_ROLE));
            if !labelled {
                let patch = serde_json::json!({"metadata": {"labels": {CONTROL_PLANE_ROLE: ""}}});
                nodes
                    .patch(&host.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("labelling node {}: {e}", host.name))?;
                after
                    .changes
                    .push(format!("label node {} {CONTROL_PLANE_ROLE}", host.name));
            }
        }
        Ok(after)
    }
}

/// The Node's spec.podCIDR from the inventory (set once, while empty), so CNIs that read it
/// (Flannel, Cilium's kubernetes IPAM) and `kubectl get node` agree with the inventory.
async fn set_pod_cidr(nodes: &Api<Node>, node: &Node, host: &Host) -> Result<(), String> {
    let current = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
    match current {
        Some(c) if c == host.pod_cidr.to_string() => Ok(()),
        Some(c) => Err(format!(
            "node {} already has pod CIDR {c}, the inventory gives it {}: set hosts[].podCIDR to {c}, or delete the Node and join it again",
            host.name, host.pod_cidr
        )),
        None => {
            let cidr = host.pod_cidr.to_string();
            let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            nodes
                .patch(&host.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("setting the pod CIDR of node {}: {e}", host.name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_server;

    /// As a kubelet writes it after its TLS bootstrap: the credentials are files it rotates.
    const BOOTSTRAPPED: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://10.244.0.2:6443
  name: default-cluster
contexts:
- context:
    cluster: default-cluster
    namespace: default
    user: default-auth
  name: default-context
current-context: default-context
kind: Config
users:
- name: default-auth
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
";

    #[test]
    fn a_kubelet_kubeconfig_follows_the_endpoint_and_keeps_its_credentials()
    -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(with_server(BOOTSTRAPPED, "https://10.244.0.2:6443")?, None);
        let moved = with_server(BOOTSTRAPPED, "https://10.244.0.9:6443")?
            .ok_or("the kubeconfig was not moved to the new endpoint")?;
        let was: serde_yaml::Value = serde_yaml::from_str(BOOTSTRAPPED)?;
        let now: serde_yaml::Value = serde_yaml::from_str(&moved)?;
        assert_eq!(
            now["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://10.244.0.9:6443")
        );
        assert_eq!(
            now["clusters"][0]["cluster"]["certificate-authority-data"],
            was["clusters"][0]["cluster"]["certificate-authority-data"]
        );
        assert_eq!(now["users"], was["users"]);
        assert_eq!(now["contexts"], was["contexts"]);
        assert_eq!(with_server(&moved, "https://10.244.0.9:6443")?, None);
        assert!(with_server("clusters: [", "https://x:6443").is_err());
        Ok(())
    }
}
