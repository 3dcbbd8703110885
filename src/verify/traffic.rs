//! Traffic between the test pods: pod to pod for every ordered pair of nodes (the receiver sees
//! the sender's own address: no NAT), node to pod, and pod to the Service's virtual IP.

use super::workload::in_parallel;
use super::*;

pub(super) async fn pod_to_pod(ctx: &Ctx, pods: &Api<Pod>, running: &[TestPod]) -> Vec<Row> {
    if running.len() < 2 {
        return vec![Row::skipped(
            "pod-to-pod",
            "-",
            "needs test pods on two nodes",
        )];
    }
    let mut checks = Vec::new();
    for a in running {
        for b in running.iter().filter(|b| b.name != a.name) {
            checks.push(async move {
                let subject = format!("{} → {}", a.host.name, b.host.name);
                let u = url(&b.ip, POD_PORT);
                match probe::fetch_from_pod(pods, &a.name, &u).await {
                    Ok(text) if text.trim() == b.name => {
                        Row::pass("pod-to-pod", subject, format!("{} → {u}: {}", a.ip, b.name))
                    }
                    Ok(text) => Row::fail(
                        "pod-to-pod",
                        subject,
                        format!(
                            "{} → {u}: answered by {:?}, not {}",
                            a.ip,
                            text.trim(),
                            b.name
                        ),
                    ),
                    Err(e) => Row::fail("pod-to-pod", subject, format!("{} → {u}: {e}", a.ip))
                        .with_cause(cause::unreachable_pod(ctx, &a.host, &b.host, &b.ip).await),
                }
            });
        }
    }
    let mut rows = in_parallel(checks).await;
    // no NAT: each receiver logged the sender's own pod address
    let passed: Vec<(usize, &TestPod, String)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.outcome == Outcome::Pass)
        .filter_map(|(i, r)| {
            let (from, to) = r.subject.split_once(" → ")?;
            let a = running.iter().find(|p| p.host.name == from)?;
            Some((i, a, to.to_string()))
        })
        .collect();
    let expected: Vec<(String, String)> = passed
        .iter()
        .map(|(_, a, to)| (a.ip.clone(), to.clone()))
        .collect();
    let logs = receiver_logs(pods, running, &expected).await;
    for (i, a, to) in passed {
        let row = &mut rows[i];
        if logs.get(&to).is_some_and(|log| seen_from(log, &a.ip)) {
            row.detail
                .push_str(&format!(" (seen from {}: no NAT)", a.ip));
        } else {
            row.outcome = Outcome::Fail;
            row.detail.push_str(&format!(
                "; but the request did not arrive from {}: it was translated on the way",
                a.ip
            ));
            row.cause = Some(format!(
                "a masquerade rule on {} applies to pod traffic: `iptables -t nat -S POSTROUTING` there",
                a.host.name
            ));
        }
    }
    rows
}

/// The logs of the receivers (by node) that `expected` names as (sender's address, receiver).
/// A log reaches the API a moment after its answer did: the receivers still missing a sender
/// are read again, at once, for up to 3 s.
async fn receiver_logs(
    pods: &Api<Pod>,
    running: &[TestPod],
    expected: &[(String, String)],
) -> std::collections::HashMap<String, String> {
    let mut logs = std::collections::HashMap::new();
    let started = Instant::now();
    let mut missing = missing_receivers(expected, &logs);
    while !missing.is_empty() {
        let read = running
            .iter()
            .filter(|p| missing.contains(&p.host.name))
            .map(|p| async move {
                let text = pods
                    .logs(&p.name, &LogParams::default())
                    .await
                    .unwrap_or_default();
                (p.host.name.clone(), text)
            });
        logs.extend(futures::future::join_all(read).await);
        missing = missing_receivers(expected, &logs);
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    logs
}

/// The receivers whose log (in `logs`, by node) lacks a request from a sender `expected` names.
fn missing_receivers(
    expected: &[(String, String)],
    logs: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let mut missing: Vec<String> = expected
        .iter()
        .filter(|(ip, to)| !logs.get(to).is_some_and(|log| seen_from(log, ip)))
        .map(|(_, to)| to.clone())
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Whether busybox httpd's log (`[::ffff:10.88.0.3]:41234: url:/`) has a request of `/` (what
/// pod-to-pod asks for) from `ip`.
pub(super) fn seen_from(log: &str, ip: &str) -> bool {
    log.lines().any(|l| {
        let from_ip = l.starts_with(&format!("[::ffff:{ip}]:"))
            || l.starts_with(&format!("[{ip}]:"))
            || l.starts_with(&format!("{ip}:"));
        from_ip && l.ends_with(": url:/")
    })
}

pub(super) async fn node_to_pod(ctx: &Ctx, running: &[TestPod]) -> Vec<Row> {
    let mut checks = Vec::new();
    for a in running {
        for b in running {
            checks.push(async move {
                let subject = format!("{} → {}", a.host.name, b.host.name);
                let reply = match ctx.session(&a.host).await {
                    Ok(s) => probe::fetch_from_node(&s, &b.ip, POD_PORT).await,
                    Err(e) => Err(e.to_string()),
                };
                let target = format!("{}:{POD_PORT}", b.ip);
                match reply {
                    Ok(text) if text.trim() == b.name => {
                        Row::pass("node-to-pod", subject, format!("{target}: {}", b.name))
                    }
                    Ok(text) => Row::fail(
                        "node-to-pod",
                        subject,
                        format!("{target}: answered {:?}, not {}", text.trim(), b.name),
                    ),
                    Err(e) => Row::fail("node-to-pod", subject, format!("{target}: {e}"))
                        .with_cause(cause::unreachable_pod(ctx, &a.host, &b.host, &b.ip).await),
                }
            });
        }
    }
    in_parallel(checks).await
}

pub(super) async fn pod_to_service(
    ctx: &Ctx,
    pods: &Api<Pod>,
    running: &[TestPod],
    cluster_ip: &str,
) -> Vec<Row> {
    let u = url(cluster_ip, SERVICE_PORT);
    let checks = running.iter().map(|a| {
        let u = u.clone();
        async move {
            let subject = format!("{} → {SERVICE}", a.host.name);
            match probe::fetch_from_pod(pods, &a.name, &u).await {
                Ok(text) if running.iter().any(|p| p.name == text.trim()) => Row::pass(
                    "pod-to-service",
                    subject,
                    format!("{u} (ClusterIP): answered by {}", text.trim()),
                ),
                Ok(text) => Row::fail(
                    "pod-to-service",
                    subject,
                    format!("{u}: answered {:?}, not a test pod", text.trim()),
                ),
                Err(e) => Row::fail("pod-to-service", subject, format!("{u} (ClusterIP): {e}"))
                    .with_cause(cause::unreachable_service(ctx, &a.host, cluster_ip).await),
            }
        }
    });
    in_parallel(checks.collect()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_receiver_still_missing_a_sender_is_read_again()
    -> Result<(), Box<dyn std::error::Error>> {
        let expected = [
            ("10.88.0.3".to_string(), "n2".to_string()),
            ("10.88.0.4".to_string(), "n1".to_string()),
            ("10.88.0.5".to_string(), "n1".to_string()),
        ];
        let mut logs = std::collections::HashMap::new();
        assert_eq!(missing_receivers(&expected, &logs), ["n1", "n2"]);
        logs.insert(
            "n2".to_string(),
            "[::ffff:10.88.0.3]:41234: url:/\n".to_string(),
        );
        // n1 has one sender of two, the other only by its search-path lookup
        logs.insert(
            "n1".to_string(),
            "[::ffff:10.88.0.4]:5: url:/\n[::ffff:10.88.0.5]:6: url:/search-path-lookup\n"
                .to_string(),
        );
        assert_eq!(missing_receivers(&expected, &logs), ["n1"]);
        logs.get_mut("n1")
            .ok_or("no log of n1")?
            .push_str("[::ffff:10.88.0.5]:7: url:/\n");
        assert!(missing_receivers(&expected, &logs).is_empty());
        Ok(())
    }

    #[test]
    fn the_sender_is_found_in_the_httpd_log_only_by_its_own_address() {
        let log = "[::ffff:10.88.0.3]:41234: url:/\n[::ffff:10.88.0.3]:41234: response:200\n";
        assert!(seen_from(log, "10.88.0.3"));
        assert!(!seen_from(log, "10.88.0.31"));
        assert!(!seen_from(log, "10.244.0.20"));
        // the search-path lookup's request through the Service is not a pod-to-pod one
        let lookup = format!("[::ffff:10.88.0.5]:41236: url:{}\n", probe::LOOKUP_PATH);
        assert!(!seen_from(&lookup, "10.88.0.5"));
    }
}
