//! The drain of a leaving node: cordon it, evict its pods (DaemonSet and static pods stay: they go
//! with the host) and wait for them to go.

use super::*;

/// How long evicted pods may take to go (their grace periods included).
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(180);

/// The annotation a drain that cordoned a node for a while (an upgrade) leaves on it, so that
/// only what it cordoned is uncordoned (a node the operator cordoned stays so).
pub const CORDONED_BY: &str = "provision.io/cordoned-by";

/// Cordons the node and evicts its pods (DaemonSet and static pods stay: they go with the host).
pub struct Drain {
    pub cluster_stays: bool,
    /// How long evictions refused by a PodDisruptionBudget are retried.
    pub wait: Duration,
    /// Mark the cordon as provision's ([`CORDONED_BY`]), to be undone after the work.
    pub mark: bool,
    /// Once `wait` is over, delete the pods still there (a budget protects them) instead of
    /// stopping: `kubectl drain --disable-eviction`'s way past a PodDisruptionBudget.
    pub force: bool,
}

/// How long pods deleted past their budget get to terminate.
const FORCED_GRACE: Duration = Duration::from_secs(120);

/// The pods a drain evicts from `node` (those already terminating included: it waits for them).
pub(super) async fn pods_to_evict(pods: &Api<Pod>, node: &str) -> Result<Vec<Pod>, String> {
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| format!("listing the pods on {node}: {e}"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| {
            let daemon = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DaemonSet");
            let mirror = p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
            !daemon && !mirror
        })
        .collect())
}

pub(super) fn namespace_terminating(s: &kube::core::Status) -> bool {
    s.code == 403
        && s.details
            .iter()
            .flat_map(|d| d.causes.iter())
            .any(|c| c.reason == "NamespaceTerminating")
}

/// The PodDisruptionBudgets (`namespace/name`) whose selector picks `pod`.
async fn budgets_of(client: &kube::Client, pod: &Pod) -> Vec<String> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let Some(ns) = pod.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let Ok(list) = budgets.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| selects(sel, &labels))
        })
        .map(|b| format!("{ns}/{}", b.metadata.name.as_deref().unwrap_or("")))
        .collect()
}

/// Whether a label selector picks an object with `labels` (an empty selector picks all).
fn selects(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_label && by_expression
}

/// The pods of `pods` not terminating yet, each with the API of its namespace and its name.
fn not_terminating<'a>(
    client: &'a kube::Client,
    pods: &'a [Pod],
) -> impl Iterator<Item = (&'a Pod, Api<Pod>, &'a str)> + 'a {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let (ns, name) = (
                p.metadata.namespace.as_deref()?,
                p.metadata.name.as_deref()?,
            );
            Some((p, Api::namespaced(client.clone(), ns), name))
        })
}

/// Deletes a pod (its grace period and preStop hooks still run); false when it was gone.
async fn delete(pods: &Api<Pod>, name: &str) -> Result<bool, kube::Error> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn pod_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

pub(super) fn api_error(node: &str, e: impl std::fmt::Display) -> String {
    format!(
        "cannot drain {node} through the API: {e}\nto reset the host without the API, re-run with --skip-phases drain,delete-node"
    )
}

/// The API client and the host's Node, or None (with a note) when it is not a node.
pub(super) async fn leaving_node(
    ctx: &Ctx,
    host: &Host,
    after: &mut step::After,
) -> Result<Option<(kube::Client, Node)>, String> {
    // evictions refused by a budget come back at once, to be retried within the drain's wait
    let client = crate::api::client_without_retries(ctx, "admin").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes
        .get_opt(&host.name)
        .await
        .map_err(|e| api_error(&host.name, e))?
    {
        Some(node) => Ok(Some((client, node))),
        None => {
            after
                .notes
                .push(format!("{} is not a node of the cluster", host.name));
            Ok(None)
        }
    }
}

#[async_trait::async_trait]
impl Step for Drain {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, _: &Host) -> bool {
        self.cluster_stays
    }

    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        let Some((client, _)) = leaving_node(ctx, host, &mut after).await? else {
            return Ok(after);
        };
        let pods = pods_to_evict(&Api::all(client), &host.name).await?;
        after.changes.push(format!(
            "would cordon {} and evict {} pod(s): {}",
            host.name,
            pods.len(),
            pods.iter().map(pod_name).collect::<Vec<_>>().join(", ")
        ));
        Ok(after)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let mut after = step::After::default();
        let Some((client, node)) = leaving_node(ctx, host, &mut after).await? else {
            return Ok(after);
        };
        let nodes: Api<Node> = Api::all(client.clone());
        if !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
        {
            let mut patch = serde_json::json!({"spec": {"unschedulable": true}});
            if self.mark {
                patch["metadata"] = serde_json::json!({"annotations": {CORDONED_BY: "upgrade"}});
            }
            nodes
                .patch(&host.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&host.name, e))?;
            after.changes.push(format!("cordon {}", host.name));
        }
        let pods: Api<Pod> = Api::all(client.clone());
        let started = Instant::now();
        let mut deadline = self.wait;
        let mut evicted = std::collections::BTreeSet::new();
        let mut forced = std::collections::BTreeSet::new();
        loop {
            let left = pods_to_evict(&pods, &host.name).await?;
            if left.is_empty() {
                break;
            }
            let mut refused = Vec::new();
            for (p, in_ns, name) in not_terminating(&client, &left) {
                match in_ns.evict(name, &EvictParams::default()).await {
                    Ok(_) => {
                        evicted.insert(pod_name(p));
                    }
                    // a PodDisruptionBudget says not now: try again until the wait ends
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        let budgets = budgets_of(&client, p).await;
                        refused.push(if budgets.is_empty() {
                            pod_name(p)
                        } else {
                            format!("{} by {}", pod_name(p), budgets.join(", "))
                        })
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    // its namespace is being deleted (no eviction can be created there): the
                    // pod goes with it anyway, so delete it now rather than wait for the
                    // namespace controller
                    Err(kube::Error::Api(s)) if namespace_terminating(&s) => {
                        delete(&in_ns, name)
                            .await
                            .map_err(|e| api_error(&host.name, e))?;
                    }
                    Err(e) => return Err(api_error(&host.name, e)),
                }
            }
            if started.elapsed() > deadline && self.force && forced.is_empty() {
                for (p, in_ns, name) in not_terminating(&client, &left) {
                    if delete(&in_ns, name)
                        .await
                        .map_err(|e| api_error(&host.name, e))?
                    {
                        forced.insert(pod_name(p));
                    }
                }
                deadline += FORCED_GRACE;
            } else if started.elapsed() > deadline {
                let names: Vec<String> = left.iter().map(pod_name).collect();
                return Err(format!(
                    "{} still has pods after {} s: {}{}\n{} stays cordoned; see `kubectl describe pod` for each, then run the same command again",
                    host.name,
                    self.wait.as_secs(),
                    names.join(", "),
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (evicting {} is refused by a PodDisruptionBudget: `kubectl get pdb -A` shows how many may go)",
                            refused.join("; ")
                        )
                    },
                    host.name
                ));
            }
            // pods going away are seen gone within a fifth of a second; an eviction a budget
            // refused is asked again every 2 s (kubectl drain asks every 5 s)
            tokio::time::sleep(if refused.is_empty() {
                crate::api::poll_pause(started)
            } else {
                Duration::from_secs(2)
            })
            .await;
        }
        if !forced.is_empty() {
            after.changes.push(format!(
                "delete {} pod(s) from {} past their PodDisruptionBudget (--force): {}",
                forced.len(),
                host.name,
                forced.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if !evicted.is_empty() {
            after.changes.push(format!(
                "evict {} pod(s) from {}: {}",
                evicted.len(),
                host.name,
                evicted.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_pick_by_labels_and_expressions() -> Result<(), Box<dyn std::error::Error>> {
        let sel: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(serde_json::json!({
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
            }))?;
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selects(&sel, &labels(&[("app", "web"), ("tier", "front")])));
        assert!(!selects(&sel, &labels(&[("app", "web"), ("tier", "back")])));
        assert!(!selects(&sel, &labels(&[("tier", "front")])));
        assert!(selects(&Default::default(), &labels(&[])));
        Ok(())
    }
}
