//! The context of one run: the cluster, the operator's options, the output, one SSH connection
//! per host, and what the run reads once and shares (the CAs, the bundle plan, API clients).
//! Phases talk to each other only through the hosts and the API, never through this.

use crate::bundle::plan::BundlePlan;
use crate::cluster::{Cluster, Host};
use crate::host::read::read_files;
use crate::output::Reporter;
use crate::pki::{self, Ca, CaKind};
use crate::ssh::{HostKeyPolicy, Session, SshError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Mutex, OnceCell};

/// What the operator asked of this run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    pub concurrency: usize,
    pub ignore_preflight: Vec<String>,
    /// Certificates and kubeconfigs to re-issue even when compliant (`certs renew`).
    pub renew: BTreeSet<String>,
    /// Where the admin kubeconfig is written on the operator's machine.
    pub local_kubeconfig: Option<PathBuf>,
    /// The bundle lock file beside the inventory.
    pub lock_file: Option<PathBuf>,
}

pub struct Ctx {
    pub cluster: Arc<Cluster>,
    pub options: Options,
    pub out: Reporter,
    policy: HostKeyPolicy,
    sessions: HashMap<String, OnceCell<Arc<Session>>>,
    /// The CAs and the service-account key of this run (memory only): read from the seed
    /// control plane, or made by their own phase.
    cas: Mutex<BTreeMap<CaKind, Ca>>,
    service_account: Mutex<Option<(String, String)>>,
    bundle_plan: OnceCell<Result<Arc<BundlePlan>, String>>,
    /// API clients by credentials (`admin`, `super-admin`), made on first use (`crate::api`).
    pub(crate) api_clients: Mutex<HashMap<String, kube::Client>>,
}

impl Ctx {
    pub fn new(
        cluster: Arc<Cluster>,
        options: Options,
        policy: HostKeyPolicy,
        out: Reporter,
    ) -> Ctx {
        let sessions = cluster
            .hosts
            .iter()
            .map(|h| (h.name.clone(), OnceCell::new()))
            .collect();
        let options = Options {
            concurrency: options.concurrency.max(1),
            ..options
        };
        Ctx {
            cluster,
            options,
            out,
            policy,
            sessions,
            cas: Default::default(),
            service_account: Default::default(),
            bundle_plan: OnceCell::new(),
            api_clients: Default::default(),
        }
    }

    /// Records the seed control plane (`crate::settle::seed`) in this run's cluster. Called before any
    /// phase reads the cluster, so every reader sees the same one.
    pub fn set_seed(&mut self, seed: Option<String>) {
        std::sync::Arc::make_mut(&mut self.cluster).seed = seed;
    }

    pub fn dry_run(&self) -> bool {
        self.options.dry_run
    }

    /// The host's connection, opened on first use and reused by every later phase.
    pub async fn session(&self, host: &Host) -> Result<Arc<Session>, SshError> {
        let cell = self
            .sessions
            .get(&host.name)
            .ok_or_else(|| SshError::Channel {
                host: host.name.clone(),
                detail: "not in the inventory".into(),
            })?;
        cell.get_or_try_init(|| async {
            Session::connect(&host.name, &host.ssh, self.policy)
                .await
                .map(Arc::new)
        })
        .await
        .cloned()
    }

    pub async fn close(self) {
        for (_, cell) in self.sessions {
            if let Some(s) = cell.into_inner()
                && let Ok(s) = Arc::try_unwrap(s)
            {
                s.close().await;
            }
        }
    }

    /// `paths` as the seed control plane holds them (those that exist), with its name.
    pub async fn read_seed(
        &self,
        paths: &[String],
    ) -> Result<(String, BTreeMap<String, Vec<u8>>), String> {
        let first = self
            .cluster
            .seed_control_plane()
            .ok_or("the inventory has no control plane")?;
        let session = self.session(first).await.map_err(|e| e.to_string())?;
        let files = read_files(&session, paths)
            .await
            .map_err(|e| e.to_string())?;
        Ok((first.name.clone(), files))
    }

    /// The CA of `kind`: from this run's memory, the inventory (external CA), or the seed
    /// control plane; made only when `create` (its own phase) and absent everywhere. Every
    /// reader of a CA comes here, so a run reads each one once.
    pub async fn ca(&self, kind: CaKind, create: bool) -> Result<Ca, String> {
        let mut cache = self.cas.lock().await;
        if let Some(ca) = cache.get(&kind) {
            return Ok(ca.clone());
        }
        let pki = &self.cluster.pki;
        let ca = match (&pki.external_ca, kind) {
            (Some(ext), CaKind::Kubernetes) => Ca {
                kind,
                cert_pem: ext.cert_pem.clone(),
                key_pem: ext.key_pem.clone(),
            },
            _ => {
                let (crt, key) = (pki_path(kind.base(), "crt"), pki_path(kind.base(), "key"));
                let (first, files) = self.read_seed(&[crt.clone(), key.clone()]).await?;
                match (text(&files, &crt), text(&files, &key)) {
                    (Some(cert_pem), Some(key_pem)) => {
                        crate::x509::check_external_ca(&cert_pem, Some(&key_pem)).map_err(|e| {
                            format!("the {} CA on {first} is unusable: {e}", kind.common_name())
                        })?;
                        Ca {
                            kind,
                            cert_pem,
                            key_pem: Some(key_pem),
                        }
                    }
                    (Some(_), None) => {
                        return Err(format!(
                            "{first} has {crt} but not its key: restore {key}, or move both away to create a new CA (every certificate it signed will then be re-issued)"
                        ));
                    }
                    (None, _) if create => Ca::generate(kind, pki.key_type, pki.ca_validity_days)
                        .map_err(|e| e.to_string())?,
                    (None, _) => {
                        return Err(format!(
                            "{first} has no {} CA yet: run `provision init phase certs/{}` first",
                            kind.common_name(),
                            kind.name()
                        ));
                    }
                }
            }
        };
        cache.insert(kind, ca.clone());
        Ok(ca)
    }

    /// The service-account signing key pair (private, public): the seed control plane's, else
    /// a new one.
    pub async fn service_account(&self) -> Result<(String, String), String> {
        let mut cache = self.service_account.lock().await;
        if let Some(sa) = cache.as_ref() {
            return Ok(sa.clone());
        }
        let (key, public) = (pki_path("sa", "key"), pki_path("sa", "pub"));
        let (_, files) = self.read_seed(&[key.clone(), public.clone()]).await?;
        let pair = match text(&files, &key) {
            // the public half is derived from the private one, so a lost sa.pub is rewritten
            Some(k) => {
                let p = pki::public_key_of(&k)
                    .map_err(|e| format!("{key} on the seed control plane: {e}"))?;
                (k, p)
            }
            None => {
                pki::service_account_key(self.cluster.pki.key_type).map_err(|e| e.to_string())?
            }
        };
        *cache = Some(pair.clone());
        Ok(pair)
    }

    /// What the bundle gives each host of the inventory, resolved once per run.
    pub async fn bundle_plan(&self) -> Result<Arc<BundlePlan>, String> {
        self.bundle_plan
            .get_or_init(|| async { BundlePlan::resolve(&self.cluster).map(Arc::new) })
            .await
            .clone()
    }
}

use crate::paths::pki as pki_path;

fn text(files: &BTreeMap<String, Vec<u8>>, p: &str) -> Option<String> {
    files
        .get(p)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}
