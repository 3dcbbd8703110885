//! A workload behind a NodePort and a client outside the cluster that keeps asking it: what
//! the upgrade tests measure "no request lost" with.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const NODE_PORT: u16 = 30080;

/// `web`: 3 replicas behind a NodePort, each finishing its requests before it goes (preStop),
/// and a PodDisruptionBudget of `min_available`.
pub fn web(min_available: u32) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web", "namespace": "default"}},
  "spec": {{"replicas": 3, "selector": {{"matchLabels": {{"app": "web"}}}},
    "template": {{"metadata": {{"labels": {{"app": "web"}}}}, "spec": {{"terminationGracePeriodSeconds": 15,
      "containers": [{{"name": "web", "image": "registry.k8s.io/e2e-test-images/busybox:1.35.0",
        "imagePullPolicy": "Never", "command": ["sh", "-c", "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 8080 -h /w"],
        "readinessProbe": {{"httpGet": {{"path": "/", "port": 8080}}, "periodSeconds": 1}},
        "lifecycle": {{"preStop": {{"exec": {{"command": ["sleep", "5"]}}}}}}}}]}}}}}}}}
---
{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web", "namespace": "default"}},
  "spec": {{"type": "NodePort", "selector": {{"app": "web"}}, "ports": [{{"port": 80, "targetPort": 8080, "nodePort": {NODE_PORT}}}]}}}}
---
{{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {{"name": "web", "namespace": "default"}},
  "spec": {{"minAvailable": {min_available}, "selector": {{"matchLabels": {{"app": "web"}}}}}}}}"#
    )
}

/// The shell command, run on a control plane, that applies `manifest` and waits for `web`.
pub fn apply_web(manifest: &str) -> String {
    format!(
        "cat > /tmp/web.yaml <<'EOF'\n{manifest}\nEOF\nkubectl --kubeconfig=/etc/kubernetes/admin.conf apply -f /tmp/web.yaml && kubectl --kubeconfig=/etc/kubernetes/admin.conf rollout status deployment/web --timeout=120s"
    )
}

/// Requests to `address:NODE_PORT` every 100 ms until `stop`: (answered, failed with why).
pub fn client(
    address: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        let target = format!("{address}:{NODE_PORT}")
            .parse()
            .expect("an address");
        while !stop.load(Ordering::SeqCst) {
            let started = std::time::SystemTime::now();
            let result = (|| -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer)
            })();
            match result {
                Ok(a) if a.starts_with("HTTP/1.") && a.contains(" 200 ") => ok += 1,
                Ok(a) => failed.push(format!("{started:?}: {}", a.lines().next().unwrap_or(""))),
                Err(e) => failed.push(format!("{started:?}: {e}")),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (ok, failed)
    })
}

/// The bound the README states for requests lost during an upgrade: none in most runs, a few
/// (under 2%) in some, while a node's kube-proxy restarts on its new binary.
pub fn assert_few_failed(answered: u32, failed: &[String]) {
    assert!(
        answered > 100,
        "the client was answered {answered} times only"
    );
    let total = answered as usize + failed.len();
    assert!(
        failed.len() * 50 <= total,
        "{} of {total} requests failed during the upgrade: {failed:#?}",
        failed.len()
    );
    if !failed.is_empty() {
        eprintln!("{} of {total} requests failed: {failed:#?}", failed.len());
    }
}

/// The (phase, host) of every host event of a JSON run, in order.
pub fn host_events(run: &super::Run) -> Vec<(String, String)> {
    run.events()
        .iter()
        .filter(|e| e["event"] == "host")
        .map(|e| {
            (
                e["phase"].as_str().unwrap_or_default().to_string(),
                e["result"]["host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
