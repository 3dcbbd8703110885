//! The two ways `verify` sends traffic: from inside a test pod (exec through the API server and
//! the kubelet) and from a node itself (over SSH). Both fetch the answering pod's name over HTTP,
//! so a reply proves which pod it came from.

use crate::ssh::{Session, shell_quote};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The port the test pods serve their own name on (busybox httpd).
pub const POD_PORT: u16 = 8080;
/// Their second port (named `alt`; `POD_PORT` is named `http`).
pub const ALT_PORT: u16 = 8081;

/// Attempts each probe makes before it counts as failed (a new route or rule may lag a moment).
const ATTEMPTS: u32 = 3;

/// The time limit of each attempt of an HTTP probe or DNS lookup, in seconds, 0.2 s apart: short
/// at first, where a Service's rules, a route or CoreDNS's view of a new Service lag a moment
/// behind (an attempt whose first SYN was dropped waits 1 s for its retransmission: cheaper
/// started again), then longer for a slow answer.
const ATTEMPT_LIMITS: &str = "1 1 1 2 3 3";

pub fn url(ip: &str, port: u16) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("http://[{ip}]:{port}/"),
        _ => format!("http://{ip}:{port}/"),
    }
}

/// What a probe got: the reply's text, or what went wrong.
pub type Reply = Result<String, String>;

/// Runs `script` with `sh -c` in `pod`; its stdout when it exits 0.
pub async fn exec(pods: &Api<Pod>, pod: &str, script: &str) -> Reply {
    let run = async {
        let ap = AttachParams::default().stdout(true).stderr(true);
        let mut p = pods
            .exec(pod, ["sh", "-c", script], &ap)
            .await
            .map_err(|e| format!("exec in {pod}: {e}"))?;
        let (mut out, mut err) = (String::new(), String::new());
        let (mut so, mut se) = (p.stdout(), p.stderr());
        tokio::join!(
            async {
                if let Some(s) = so.as_mut() {
                    let _ = s.read_to_string(&mut out).await;
                }
            },
            async {
                if let Some(s) = se.as_mut() {
                    let _ = s.read_to_string(&mut err).await;
                }
            }
        );
        let status = match p.take_status() {
            Some(s) => s.await,
            None => None,
        };
        let _ = p.join().await;
        match status.and_then(|s| s.status).as_deref() {
            Some("Success") => Ok(out),
            _ => Err(first_line(if err.trim().is_empty() { &out } else { &err })),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| Err(format!("exec in {pod} did not finish in 30 s")))
}

/// One HTTP GET with a time limit, as a shell command for the test image. (`timeout` rather
/// than wget's own -T, which some static busybox builds crash on.)
pub fn wget(url: &str) -> String {
    wget_within(url, 3)
}

/// The same with a limit of `seconds`.
pub fn wget_within(url: &str, seconds: u32) -> String {
    format!("timeout {seconds} wget -q -O - {}", shell_quote(url))
}

/// An HTTP GET from inside `pod`, retried.
pub async fn fetch_from_pod(pods: &Api<Pod>, pod: &str, url: &str) -> Reply {
    let script = format!(
        "for t in {ATTEMPT_LIMITS}; do timeout $t wget -q -O - {u} && exit 0; sleep 0.2; done; exit 1",
        u = shell_quote(url)
    );
    exec(pods, pod, &script)
        .await
        .map_err(|e| if e.is_empty() { "no answer".into() } else { e })
}

/// A DNS lookup from inside `pod`, retried; the answer's text.
pub async fn lookup_from_pod(pods: &Api<Pod>, pod: &str, name: &str) -> Reply {
    let script = format!(
        "for t in {ATTEMPT_LIMITS}; do timeout $t nslookup {n} && exit 0; sleep 0.2; done; exit 1",
        n = shell_quote(name)
    );
    exec(pods, pod, &script).await
}

/// Resolves `name` in `pod` through the C library's resolver, which applies the search path of
/// the pod's resolv.conf (nslookup asks for the name as given): the address ping reports,
/// whether or not the one ICMP echo it sends is answered.
pub async fn resolve_from_pod(pods: &Api<Pod>, pod: &str, name: &str) -> Reply {
    let script = format!(
        "i=0; while [ $i -lt {ATTEMPTS} ]; do out=$(ping -c 1 -W 1 {n} 2>&1 | head -n 1); case $out in PING*'('*) echo \"$out\"; exit 0;; esac; i=$((i+1)); sleep 1; done; echo \"$out\" >&2; exit 1",
        n = shell_quote(name)
    );
    exec(pods, pod, &script).await
}

/// An HTTP GET of a pod from a node's own network namespace (bash's /dev/tcp: nothing to
/// install on the node).
pub async fn fetch_from_node(session: &Session, ip: &str, port: u16) -> Reply {
    let target = format!("/dev/tcp/{ip}/{port}");
    let script = format!(
        "for t in {ATTEMPT_LIMITS}; do out=$(timeout $t bash -c 'exec 3<>{t} && printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3 && cat <&3' 2>&1) && {{ printf '%s\\n' \"$out\" | tail -n 1; exit 0; }}; sleep 0.2; done; printf '%s\\n' \"$out\"; exit 1",
        t = target
    );
    match session.exec(&script, None).await {
        Ok(o) if o.status == 0 => Ok(o.stdout_text()),
        Ok(o) => Err({
            let text = first_line(&o.stdout_text());
            if text.is_empty() {
                "no answer (6 attempts in 12 s)".into()
            } else {
                text
            }
        }),
        Err(e) => Err(e.to_string()),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_addresses() {
        assert_eq!(url("10.88.1.5", 8080), "http://10.88.1.5:8080/");
        assert_eq!(url("fd00::5", 80), "http://[fd00::5]:80/");
    }
}
