//! `provision verify`: checks the cluster keeps Kubernetes' network rules, row by row. The API
//! and every node first; then a test pod on every node (the bundle's busybox, serving its own
//! name over HTTP) and traffic between them: pod to pod for every ordered pair of nodes (and
//! that the receiver saw the sender's own address: no NAT), node to pod, pod to a Service's
//! virtual IP, its DNS name, a NetworkPolicy, and a pod per RuntimeClass. Test objects live in
//! their own namespace, deleted afterwards.

pub mod cause;
mod dns;
mod health;
mod policy;
pub mod probe;
pub mod report;
mod runtime_class;
mod traffic;
mod workload;

use crate::api;
use crate::cluster::Host;
use crate::cni::Cni;
use crate::run::Ctx;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use probe::{ALT_PORT, POD_PORT, url};
use report::{Outcome, Report, Row};

use health::{check_control_planes, check_nodes};
pub use policy::policy_not_applied;
use std::time::{Duration, Instant};
use workload::{namespace_name, workload};

/// Test namespaces are this plus a random suffix (no waiting for an earlier one to terminate),
/// and carry this label so leftovers of interrupted runs are found and deleted.
pub const NAMESPACE_PREFIX: &str = "provision-verify-";
pub const NAMESPACE_LABEL: &str = "provision.io/verify";
const SERVICE: &str = "verify";
/// The test Service's port (to the pods' `POD_PORT`).
const SERVICE_PORT: u16 = 80;
const APP_LABEL: &str = "provision-verify";
/// How long test pods may take to run (images are local or pulled once).
const POD_WAIT: Duration = Duration::from_secs(180);
/// How far behind the API server a client-go watch (CoreDNS's, a policy engine's, a kubelet's)
/// may be. After the API server restarts (an upgrade, a renewal, a reboot) client-go tries
/// again only after a backoff of up to 30 s, which its jitter may double. Measured here after
/// one restart: CoreDNS knew new Services 6 to 18 s after the API server was ready again.
const WATCH_LAG: Duration = Duration::from_secs(60);
/// Probes in flight at once.
const PARALLEL: usize = 8;

/// Which inventory hosts must be nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every host (`provision verify`): one that is not a node is a failure.
    All,
    /// Those registered so far (the last phase of `init`, which brings up one host).
    Registered,
}

/// A test pod that runs, on its node.
#[derive(Clone)]
struct TestPod {
    host: Host,
    name: String,
    ip: String,
}

pub async fn run(ctx: &Ctx, expect: Expect) -> Result<Report, String> {
    let mut report = Report::default();
    let first = ctx
        .cluster
        .seed_control_plane()
        .ok_or("the inventory has no control plane")?;
    let client = match api::client(ctx, "admin").await {
        Ok(c) => c,
        Err(e) => {
            report.rows.push(Row::fail("api", &first.name, e));
            return Ok(report);
        }
    };
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(text) if text.trim() == "ok" => {
            report
                .rows
                .push(Row::pass("api", &first.name, "/readyz: ok (etcd included)"))
        }
        Ok(text) => {
            report.rows.push(Row::fail(
                "api",
                &first.name,
                format!("/readyz: {}", text.trim()),
            ));
            return Ok(report);
        }
        Err(e) => {
            report.rows.push(
                Row::fail("api", &first.name, format!("/readyz: {e}")).with_cause(Some(format!(
                    "the API server on {} is not serving: `journalctl -u kube-apiserver`",
                    first.name
                ))),
            );
            return Ok(report);
        }
    }
    let nodes = check_nodes(ctx, &client, expect, &mut report).await?;
    check_control_planes(ctx, &client, &nodes, &mut report).await;

    let ns = namespace_name();
    let result = workload(ctx, &client, &nodes, &ns, &mut report).await;
    // the namespaces go whatever happened; their deletion finishes in the background
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let gone = std::iter::once(ns.clone())
        .chain(policy::namespaces(&ns))
        .map(|n| {
            let namespaces = namespaces.clone();
            async move { namespaces.delete(&n, &DeleteParams::background()).await }
        });
    let _ = futures::future::join_all(gone).await;
    result?;
    Ok(report)
}
