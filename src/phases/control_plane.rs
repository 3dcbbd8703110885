//! The `control-plane` phase: kube-apiserver, kube-controller-manager and kube-scheduler as
//! systemd units with kubeadm's flags plus secure defaults (Secrets encrypted at rest, an audit
//! policy and log, Node,RBAC, NodeRestriction, profiling off, TLS 1.2+), then a bounded wait
//! for `/livez` and `/readyz` that names the failing component when it gives up.

use super::step::{self, Applied, Desired, Step};
use super::{Phase, Work};
use crate::cluster::{API_PORT, Cluster, Host};
use crate::host::probe::Observed;
use crate::host::{Action, UnitSpec};
use crate::paths;
use crate::render::{render, render_typed};
use crate::run::Ctx;
use crate::systemd::{self, Unit};
use base64::Engine;

use crate::paths::{AUDIT_POLICY, ENCRYPTION_CONFIG, PKI_DIR as PKI};
pub const AUDIT_LOG: &str = "/var/log/kubernetes/audit/audit.log";
pub const COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

pub fn phase() -> Phase {
    Phase {
        name: "control-plane",
        summary: "kube-apiserver, kube-controller-manager, kube-scheduler; wait for /readyz",
        work: Work::Step(Box::new(ControlPlane)),
        children: Vec::new(),
    }
}

pub(crate) struct ControlPlane;

fn unit_path(component: &str) -> String {
    format!("/etc/systemd/system/{component}.service")
}

fn apiserver_args(c: &Cluster, host: &Host) -> Vec<String> {
    vec![
        format!("--advertise-address={}", host.address),
        "--allow-privileged=true".into(),
        "--authorization-mode=Node,RBAC".into(),
        format!("--client-ca-file={PKI}/ca.crt"),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--enable-bootstrap-token-auth=true".into(),
        format!("--etcd-cafile={PKI}/etcd/ca.crt"),
        format!("--etcd-certfile={PKI}/apiserver-etcd-client.crt"),
        format!("--etcd-keyfile={PKI}/apiserver-etcd-client.key"),
        "--etcd-servers=https://127.0.0.1:2379".into(),
        format!("--kubelet-client-certificate={PKI}/apiserver-kubelet-client.crt"),
        format!("--kubelet-client-key={PKI}/apiserver-kubelet-client.key"),
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
        // kubelets serve with certificates of the cluster CA (approved in the kubelet phase)
        format!("--kubelet-certificate-authority={PKI}/ca.crt"),
        format!("--proxy-client-cert-file={PKI}/front-proxy-client.crt"),
        format!("--proxy-client-key-file={PKI}/front-proxy-client.key"),
        "--requestheader-allowed-names=front-proxy-client".into(),
        format!("--requestheader-client-ca-file={PKI}/front-proxy-ca.crt"),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        format!("--secure-port={API_PORT}"),
        format!(
            "--service-account-issuer=https://kubernetes.default.svc.{}",
            c.dns_domain
        ),
        format!("--service-account-key-file={PKI}/sa.pub"),
        format!("--service-account-signing-key-file={PKI}/sa.key"),
        format!("--service-cluster-ip-range={}", c.service_subnet),
        format!("--tls-cert-file={PKI}/apiserver.crt"),
        format!("--tls-private-key-file={PKI}/apiserver.key"),
        "--tls-min-version=VersionTLS12".into(),
        format!("--encryption-provider-config={ENCRYPTION_CONFIG}"),
        format!("--audit-policy-file={AUDIT_POLICY}"),
        format!("--audit-log-path={AUDIT_LOG}"),
        "--audit-log-maxage=30".into(),
        "--audit-log-maxbackup=10".into(),
        "--audit-log-maxsize=100".into(),
        "--profiling=false".into(),
        // stopped, it ends its watches at once: otherwise it waits out its request timeout
        // (60 s) for them, refusing new connections all along, and its clients (CoreDNS, the
        // kubelets, kube-proxy) back off for up to a minute more before they list again
        "--shutdown-watch-termination-grace-period=2s".into(),
    ]
}

fn controller_manager_args(c: &Cluster) -> Vec<String> {
    let kc = paths::kubeconfig("controller-manager");
    vec![
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        format!("--kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--client-ca-file={PKI}/ca.crt"),
        format!("--cluster-name={}", c.name),
        format!("--cluster-signing-cert-file={PKI}/ca.crt"),
        format!("--cluster-signing-key-file={PKI}/ca.key"),
        "--controllers=*,bootstrapsigner,tokencleaner".into(),
        "--leader-elect=true".into(),
        format!("--requestheader-client-ca-file={PKI}/front-proxy-ca.crt"),
        format!("--root-ca-file={PKI}/ca.crt"),
        format!("--service-account-private-key-file={PKI}/sa.key"),
        format!("--service-cluster-ip-range={}", c.service_subnet),
        format!("--cluster-cidr={}", c.pod_subnet),
        // the built-in network writes each node's pod CIDR from the inventory
        "--allocate-node-cidrs=false".into(),
        "--use-service-account-credentials=true".into(),
        // a fresh control plane's controllers each make a ServiceAccount and get its token
        // (about 120 requests at once): the default burst of 30 at 20 per second spread
        // them over 5 s before any controller ran; the sustained rate stays the default
        "--kube-api-burst=200".into(),
        "--profiling=false".into(),
    ]
}

fn scheduler_args() -> Vec<String> {
    let kc = paths::kubeconfig("scheduler");
    vec![
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        format!("--kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=true".into(),
        "--profiling=false".into(),
    ]
}

fn unit(component: &str, description: &str, args: &[String], after: &str) -> Unit {
    Unit::new(description, &format!("/usr/local/bin/{component}"))
        .after_and_wants(&[after])
        .args(args)
        .service(&[
            ("Restart", "always"),
            ("RestartSec", "5"),
            ("LimitNOFILE", "65536"),
        ])
}

/// kubectl to this host's API server. Not the endpoint: a load balancer or VIP may answer from
/// another control plane.
fn kubectl(host: &Host) -> String {
    format!(
        "/usr/local/bin/kubectl --kubeconfig={} --server={} --request-timeout=5s",
        paths::kubeconfig("admin"),
        crate::cluster::https_url(&host.address, crate::cluster::API_PORT)
    )
}

/// Whether this host's API server is ready: `/readyz` runs every `/livez` check and more, one
/// kubectl start, not two.
fn readyz(host: &Host) -> String {
    format!("{} get --raw=/readyz >/dev/null 2>&1", kubectl(host))
}

/// How long a started API server's unit waits for `/readyz` before it counts as active.
const READY_WITHIN_S: u32 = 60;

/// The Secrets encryption configuration, the same on every control plane: the seed control
/// plane's, else a new random key for the seed and the control planes that get theirs in the
/// same run (`apply` of a new cluster). Memory only.
#[derive(Default)]
pub(crate) struct Encryption {
    pub(crate) existing: Option<String>,
    pub(crate) fresh: String,
    /// The seed is among the hosts of this run of the phase.
    pub(crate) with_seed: bool,
}

impl Encryption {
    fn for_host(&self, cluster: &Cluster, host: &Host) -> Result<String, String> {
        match &self.existing {
            // keep the key the cluster's Secrets are encrypted with
            Some(text) => Ok(text.clone()),
            None if self.with_seed || cluster.is_seed_control_plane(host) => Ok(self.fresh.clone()),
            None => Err(format!(
                "{} has no {ENCRYPTION_CONFIG} yet: run `provision init` first",
                cluster
                    .seed_control_plane()
                    .map(|f| f.name.as_str())
                    .unwrap_or("the seed control plane")
            )),
        }
    }
}

/// The certificates, keys and kubeconfigs a component's `--flag=/etc/kubernetes/...` arguments
/// name.
fn credential_files(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.split_once('=').map(|(_, v)| v))
        .filter(|v| {
            v.starts_with("/etc/kubernetes/")
                && [".crt", ".key", ".pub", ".conf"]
                    .iter()
                    .any(|ext| v.ends_with(ext))
        })
        .map(String::from)
        .collect()
}

fn new_encryption_config() -> Result<String, String> {
    let key: [u8; 32] = rand::random();
    encryption_config(
        "key1",
        &base64::engine::general_purpose::STANDARD.encode(key),
    )
}

/// The encryption configuration with one aescbc key (base64) named `key_name`.
pub(crate) fn encryption_config(key_name: &str, key: &str) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Encryption<'a> {
        key_name: &'a str,
        key: &'a str,
    }
    render_typed("encryption-config.yaml", &Encryption { key_name, key })
}

#[async_trait::async_trait]
impl Step for ControlPlane {
    type Shared = Encryption;

    fn applies_to(&self, _: &Cluster, host: &Host) -> bool {
        host.control_plane
    }

    async fn prepare(&self, ctx: &Ctx, hosts: &[(&Host, &Observed)]) -> Result<Encryption, String> {
        let (first, files) = ctx.read_seed(&[ENCRYPTION_CONFIG.to_string()]).await?;
        let existing = match files.get(ENCRYPTION_CONFIG) {
            Some(bytes) => Some(
                String::from_utf8(bytes.clone())
                    .map_err(|_| format!("{ENCRYPTION_CONFIG} on {first} is not text"))?,
            ),
            None => None,
        };
        Ok(Encryption {
            existing,
            fresh: new_encryption_config()?,
            with_seed: hosts
                .iter()
                .any(|(h, _)| ctx.cluster.is_seed_control_plane(h)),
        })
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        _: &Observed,
        encryption: &Encryption,
    ) -> Result<Desired, String> {
        let (apiserver_args, cm_args, scheduler_args) = (
            apiserver_args(cluster, host),
            controller_manager_args(cluster),
            scheduler_args(),
        );
        let apiserver = unit(
            "kube-apiserver",
            "Kubernetes API server",
            &apiserver_args,
            "etcd.service",
        )
        // the controller manager and the scheduler start once it serves them: started beside
        // it, their first lease request is refused (RBAC's roles are not in yet) and they try
        // again 2 to 4.4 s later, holding back the node's serving certificate; restarted in an
        // upgrade, a renewal or a reboot, they would fail the same way
        .active_once(&readyz(host), READY_WITHIN_S)
        .render()?;
        let cm = unit(
            "kube-controller-manager",
            "Kubernetes controller manager",
            &cm_args,
            "kube-apiserver.service",
        )
        .render()?;
        let scheduler = unit(
            "kube-scheduler",
            "Kubernetes scheduler",
            &scheduler_args,
            "kube-apiserver.service",
        )
        .render()?;
        let mut actions = vec![
            Action::secret_file(ENCRYPTION_CONFIG, encryption.for_host(cluster, host)?),
            Action::file(
                AUDIT_POLICY,
                render("audit-policy.yaml", &Default::default())?,
                0o644,
            ),
            Action::dir("/var/log/kubernetes", 0o700),
            Action::dir("/var/log/kubernetes/audit", 0o700),
        ];
        for (component, text, args) in [
            ("kube-apiserver", apiserver, &apiserver_args),
            ("kube-controller-manager", cm, &cm_args),
            ("kube-scheduler", scheduler, &scheduler_args),
        ] {
            let path = unit_path(component);
            actions.push(Action::file(&path, text, 0o644));
            let mut inputs = vec![path];
            // certificates and kubeconfigs renewed by `certs renew` (or an upgrade) after the
            // process started are loaded by a restart
            inputs.extend(credential_files(args));
            if component == "kube-apiserver" {
                inputs.extend([ENCRYPTION_CONFIG.to_string(), AUDIT_POLICY.to_string()]);
            }
            actions.push(Action::Unit(UnitSpec {
                name: format!("{component}.service"),
                enabled: true,
                active: true,
                restart_when_changed: inputs,
            }));
        }
        Ok(actions.into())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        // the unit waited for it when it started; this wait covers one not started in this run
        let wait = systemd::wait_for(&readyz(host), 480, 0.25);
        let out = session.exec(&wait, None).await.map_err(|e| e.to_string())?;
        if out.status == 0 {
            return Ok(step::After::default());
        }
        // say which component is down and why, from its own journal
        let mut report = String::from("the API server did not become ready within 120 s.\n");
        let kubectl = kubectl(host);
        let readyz = session
            .exec(
                &format!("{kubectl} get --raw='/readyz?verbose' 2>&1 | grep -v ' ok$' | tail -n 8"),
                None,
            )
            .await
            .map(|o| o.stdout_text())
            .unwrap_or_default();
        if !readyz.trim().is_empty() {
            report.push_str(&format!("/readyz says:\n{readyz}"));
        }
        for component in ["etcd"].into_iter().chain(COMPONENTS) {
            let state = systemd::state_and_journal(&session, component, 8).await;
            let mut lines = state.lines();
            let first = lines.next().unwrap_or_default();
            report.push_str(&format!("{first}\n"));
            if component == "kube-apiserver" || first != format!("{component}: active") {
                for l in lines {
                    report.push_str(&format!("    {l}\n"));
                }
            }
        }
        report.push_str("check the units' flags and certificates, then run the same command again");
        Err(report)
    }
}

#[cfg(test)]
mod tests {
    use super::Encryption;

    /// `apply` of a new HA cluster gives the seed and the other control planes their
    /// configuration in one run of the phase: the same new key, which `join` alone (the seed
    /// not in its run, and without one) must not make up.
    #[test]
    fn a_new_key_goes_to_other_control_planes_only_beside_the_seed()
    -> Result<(), Box<dyn std::error::Error>> {
        let c = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: e}\nspec:\n  hosts:\n  - {name: cp1, address: 192.168.9.11, roles: [control-plane]}\n  - {name: cp2, address: 192.168.9.12, roles: [control-plane]}\n",
        );
        let fresh = |with_seed| Encryption {
            existing: None,
            fresh: "new".into(),
            with_seed,
        };
        let (seed, other) = (&c.hosts[0], &c.hosts[1]);
        assert_eq!(fresh(true).for_host(&c, other)?, "new");
        assert_eq!(fresh(false).for_host(&c, seed)?, "new");
        let refused = fresh(false).for_host(&c, other).unwrap_err();
        assert!(refused.contains("run `provision init` first"), "{refused}");
        let kept = Encryption {
            existing: Some("the cluster's".into()),
            ..fresh(true)
        };
        assert_eq!(kept.for_host(&c, other)?, "the cluster's");
        Ok(())
    }
}
