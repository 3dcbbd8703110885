//! DNS through CoreDNS, from every test pod: the Service's full name, the API's Service name and
//! a short name through the pod's search path.

use super::workload::in_parallel;
use super::*;

/// How long verify waits for CoreDNS to become ready (it may have been deployed by the same run).
pub(super) const DNS_READY_WITHIN: Duration = Duration::from_secs(90);

/// A ready CoreDNS pod behind the kube-dns Service: its address and its pod's name.
struct CoreDns {
    ip: String,
    pod: String,
}

/// The ready endpoints of the kube-dns Service (from its EndpointSlices), or None when the
/// API server does not answer.
async fn ready_coredns(slices: &Api<EndpointSlice>) -> Option<Vec<CoreDns>> {
    let by_service = ListParams::default().labels("kubernetes.io/service-name=kube-dns");
    let list = slices.list(&by_service).await.ok()?;
    let ready = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().is_none_or(|c| c.ready != Some(false)))
        .filter_map(|e| {
            Some(CoreDns {
                ip: e.addresses.first()?.clone(),
                pod: (e.target_ref.as_ref())
                    .and_then(|r| r.name.clone())
                    .unwrap_or_default(),
            })
        })
        .collect();
    Some(ready)
}

/// Why CoreDNS cannot answer yet, or None once the kube-dns Service has a ready endpoint.
/// Waits while its pods are starting; a Deployment scaled to 0 is named at once.
pub(super) async fn coredns_unready(client: &Client) -> Option<(String, String)> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let started = Instant::now();
    loop {
        let replicas = deployments
            .get_opt("coredns")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.spec.replicas);
        if replicas == Some(0) {
            return Some((
                "the kube-dns Service has no endpoints: CoreDNS is scaled to 0".into(),
                "CoreDNS has no pods (deployment kube-system/coredns has 0 replicas): `kubectl -n kube-system scale deployment coredns --replicas=2`".into(),
            ));
        }
        if ready_coredns(&slices).await.is_some_and(|r| !r.is_empty()) {
            return None;
        }
        if started.elapsed() > DNS_READY_WITHIN {
            return Some((
                format!(
                    "the kube-dns Service has no ready endpoints after {} s",
                    DNS_READY_WITHIN.as_secs()
                ),
                "CoreDNS pods are not ready: `kubectl -n kube-system get pods -l k8s-app=kube-dns` and their logs".into(),
            ));
        }
        tokio::time::sleep(crate::api::poll_pause(started)).await;
    }
}

/// How long CoreDNS keeps an NXDOMAIN answer (`cache 30` in its Corefile): a name asked for
/// before CoreDNS learnt of its Service stays unknown to it that long after it has.
const NEGATIVE_CACHE: Duration = Duration::from_secs(30);

/// Waits, asking each ready CoreDNS pod directly from `from`, until none answers NXDOMAIN for
/// `name`, the test Service just made: CoreDNS learns of it through its watch, which may lag
/// (`WATCH_LAG`), and a lookup made before then is answered from its cache for a while more.
/// Measured here after an API server restart: CoreDNS knew new Services 6 to 18 s after it was
/// ready, and a name asked for at once resolved 30 to 60 s later. None then, else the cause
/// naming the pods still behind. A pod that does not answer at all is not waited for: the
/// lookups report that path.
async fn coredns_lags(
    client: &Client,
    pods: &Api<Pod>,
    from: &TestPod,
    name: &str,
) -> Option<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let started = Instant::now();
    loop {
        let servers = ready_coredns(&slices).await?;
        let ips: Vec<&str> = servers.iter().map(|c| c.ip.as_str()).collect();
        let out = probe::exec(pods, &from.name, &nxdomain_from(name, &ips))
            .await
            .ok()?;
        let behind: Vec<&CoreDns> = servers
            .iter()
            .filter(|c| out.split_whitespace().any(|ip| ip == c.ip))
            .collect();
        let first = behind.first()?;
        if started.elapsed() > WATCH_LAG + NEGATIVE_CACHE {
            let named: Vec<String> = behind
                .iter()
                .map(|c| format!("{} ({})", c.pod, c.ip))
                .collect();
            return Some(format!(
                "CoreDNS {} still answers NXDOMAIN for {name}, a Service that exists, after {} s: its watch of the API server lags, as for a while after the API server restarts; `kubectl -n kube-system logs {}`, or `kubectl -n kube-system rollout restart deployment coredns`",
                named.join(", "),
                started.elapsed().as_secs(),
                first.pod
            ));
        }
        tokio::time::sleep(crate::api::poll_pause(started)).await;
    }
}

/// A script printing each of the DNS servers `ips` that answers NXDOMAIN for `name`.
fn nxdomain_from(name: &str, ips: &[&str]) -> String {
    format!(
        "for ip in {}; do case $(timeout 1 nslookup {} $ip 2>&1) in *NXDOMAIN*) echo $ip;; esac; done; true",
        ips.join(" "),
        crate::ssh::shell_quote(name)
    )
}

/// DNS through CoreDNS from every test pod: the test Service's full name, the API server's
/// (`kubernetes.default.svc.<domain>`), and the test Service's short name through the pod's
/// search path.
pub(super) async fn dns(
    ctx: &Ctx,
    client: &Client,
    pods: &Api<Pod>,
    running: &[TestPod],
    cluster_ip: &str,
) -> Vec<Row> {
    let ns = pods.namespace().unwrap_or_default();
    let domain = &ctx.cluster.dns_domain;
    let api_ip = ctx.cluster.api_service_ip.to_string();
    // (name, the address it must resolve to, through the search path)
    let names = [
        (
            format!("{SERVICE}.{ns}.svc.{domain}"),
            cluster_ip.to_string(),
            false,
        ),
        (format!("kubernetes.default.svc.{domain}"), api_ip, false),
        (SERVICE.to_string(), cluster_ip.to_string(), true),
    ];
    let system_services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    match system_services.get_opt("kube-dns").await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return vec![Row::skipped(
                "dns",
                &names[0].0,
                "not checked: CoreDNS is not deployed (no kube-dns Service; `provision init` said why)",
            )];
        }
        Err(e) => return vec![Row::fail("dns", &names[0].0, e.to_string())],
    }
    if let Some((detail, cause)) = coredns_unready(client).await {
        return vec![Row::fail("dns", &names[0].0, detail).with_cause(Some(cause))];
    }
    let lagging = match running.first() {
        Some(from) => coredns_lags(client, pods, from, &names[0].0).await,
        None => None,
    };
    let check = async |a: &TestPod, (name, want, search): &(String, String, bool)| {
        let (subject, lookup) = if *search {
            (
                format!("{} → {name} (search path)", a.host.name),
                probe::resolve_from_pod(pods, &a.name, name, SERVICE_PORT).await,
            )
        } else {
            (
                format!("{} → {name}", a.host.name),
                probe::lookup_from_pod(pods, &a.name, name).await,
            )
        };
        let resolved = |text: &str| {
            if *search {
                connected_to(text, want)
            } else {
                answers(text, want)
            }
        };
        match lookup {
            Ok(text) if resolved(&text) => Row::pass("dns", subject, format!("resolves to {want}")),
            Ok(text) => Row::fail(
                "dns",
                subject,
                format!(
                    "resolves, but not to {want}: {}",
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            ),
            Err(e) => {
                Row::fail("dns", subject, format!("lookup: {e}")).with_cause(match &lagging {
                    Some(lag) => Some(lag.clone()),
                    None => {
                        let dns_ip = ctx.cluster.dns_service_ip.to_string();
                        cause::unreachable_service(ctx, &a.host, &dns_ip).await
                    }
                })
            }
        }
    };
    // per pod, the first name before the others: kube-proxy may not have the DNS Service's
    // rules yet when CoreDNS turns ready, and the C library's resolver (the search path) waits
    // 5 s on a lost query where nslookup's attempt is cut after 1 s
    let [first, others @ ..] = &names;
    let per_pod = running.iter().map(|a| async move {
        let mut rows = vec![check(a, first).await];
        rows.extend(futures::future::join_all(others.iter().map(|n| check(a, n))).await);
        rows
    });
    in_parallel(per_pod.collect()).await.concat()
}

/// Whether wget's first line (`Connecting to verify (10.96.12.7:80)`) names `ip`.
pub(super) fn connected_to(wget: &str, ip: &str) -> bool {
    wget.contains(&format!("({ip}:")) || wget.contains(&format!("([{ip}]:"))
}

/// Whether nslookup's output gives `ip` as an answer (not only as the server it asked).
pub(super) fn answers(nslookup: &str, ip: &str) -> bool {
    nslookup
        .split("Name:")
        .skip(1)
        .any(|answer| answer.split_whitespace().any(|w| w == ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The poll of each CoreDNS pod names only those answering NXDOMAIN: not one that knows
    /// the name, nor one that does not answer (the lookups report that path).
    #[test]
    fn only_the_coredns_pods_answering_nxdomain_are_waited_for()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        crate::host::stand_in(
            dir.path(),
            "nslookup",
            "#!/bin/sh\necho \"Server: $2\"\ncase $2 in\n10.88.0.3)? printf 'Name: %s\\nAddress: 10.96.4.4\\n' \"$1\";;\n10.88.1.3) echo \"** server can't find $1: NXDOMAIN\"; exit 1;;\n*) echo ';; connection timed out; no servers could be reached'; exit 1;;\nesac\n",
        )?;
        let script = nxdomain_from(
            "verify.ns.svc.cluster.local",
            &["10.88.0.3", "10.88.1.3", "10.88.2.3"],
        );
        let behind = crate::host::sh_with(&script, Some(dir.path()), &[])?;
        assert_eq!(behind, "10.88.1.3\n");
        Ok(())
    }

    #[test]
    fn the_search_path_lookup_counts_only_the_address_wget_connects_to() {
        let out = "Connecting to verify (10.101.59.26:80)";
        assert!(connected_to(out, "10.101.59.26"));
        assert!(!connected_to(out, "10.101.59.2"));
        assert!(!connected_to("wget: bad address 'verify'", "10.101.59.26"));
        assert!(connected_to(
            "Connecting to verify ([fd00:10::7]:80)",
            "fd00:10::7"
        ));
    }

    #[test]
    fn an_answer_counts_only_below_the_name_not_as_the_server() {
        let out = "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\nName:\tverify.ns.svc.cluster.local\nAddress: 10.101.59.26\n";
        assert!(answers(out, "10.101.59.26"));
        assert!(!answers(out, "10.96.0.10"));
        assert!(!answers(
            "Server: 10.96.0.10\n** server can't find verify: NXDOMAIN\n",
            "10.96.0.10"
        ));
    }
}
