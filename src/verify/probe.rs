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

/// Attempts of the search-path lookup, 2 s each, before it counts as failed. The C library's
/// resolver waits 5 s before it asks again, so a lost query is asked again sooner by a new
/// attempt: a new process, a new source port, so the DNS Service may pick another CoreDNS (one
/// that moved a moment ago, in an upgrade's drain, may still be in the rules of a node).
const LOOKUP_ATTEMPTS: u32 = 6;

/// The time limit of each attempt of an HTTP probe or DNS lookup, in seconds, 0.2 s apart: short
/// at first, where a Service's rules, a route or CoreDNS's view of a new Service lag a moment
/// behind (an attempt whose first SYN was dropped waits 1 s for its retransmission: cheaper
/// started again), then longer for a slow answer.
const ATTEMPT_LIMITS: [u32; 6] = [1, 1, 1, 2, 3, 3];

/// `for t in <limits>; do BODY; sleep 0.2; done`: BODY runs once per attempt with its limit in
/// `$t`, and leaves the loop by itself (`exit 0`) when it got its answer.
fn each_attempt(body: &str) -> String {
    let limits: Vec<String> = ATTEMPT_LIMITS.iter().map(u32::to_string).collect();
    format!("for t in {}; do {body}; sleep 0.2; done", limits.join(" "))
}

/// `command` (run under `timeout $t`) until it succeeds, or exit 1 after the last attempt.
fn retried(command: &str) -> String {
    format!(
        "{}; exit 1",
        each_attempt(&format!("timeout $t {command} && exit 0"))
    )
}

/// What a probe that never got an answer says: its attempts and their time.
fn no_answer() -> String {
    let seconds: u32 = ATTEMPT_LIMITS.iter().sum();
    format!(
        "no answer ({} attempts in {} s)",
        ATTEMPT_LIMITS.len(),
        seconds as f32 + 0.2 * (ATTEMPT_LIMITS.len() - 1) as f32
    )
}

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
    format!("timeout {seconds} {}", http_get(url))
}

/// An HTTP GET of `url` printing the body, without a time limit.
fn http_get(url: &str) -> String {
    format!("wget -q -O - {}", shell_quote(url))
}

/// An HTTP GET from inside `pod`, retried.
pub async fn fetch_from_pod(pods: &Api<Pod>, pod: &str, url: &str) -> Reply {
    exec(pods, pod, &retried(&http_get(url)))
        .await
        .map_err(|e| if e.is_empty() { no_answer() } else { e })
}

/// A DNS lookup from inside `pod`, retried; the answer's text.
pub async fn lookup_from_pod(pods: &Api<Pod>, pod: &str, name: &str) -> Reply {
    exec(pods, pod, &lookup_script(name))
        .await
        .map_err(|e| if e.is_empty() { no_answer() } else { e })
}

/// nslookup of `name`, retried. When every attempt fails, stderr gets one line with each
/// attempt's own reason, without the `Server:`/`Address:` lines nslookup prints first: a lookup
/// answered NXDOMAIN is another fault than one that timed out, and a mix shows when it changed.
fn lookup_script(name: &str) -> String {
    let attempt = format!(
        "out=$(timeout $t nslookup {} 2>&1) && {{ printf '%s\\n' \"$out\"; exit 0; }}; \
         why=$(printf '%s\\n' \"$out\" | grep -v -e '^Server:' -e '^Address:' | grep . | tail -n 1); \
         tried=\"$tried${{tried:+; }}${{why:-no answer in $t s}}\"",
        shell_quote(name)
    );
    format!(
        "tried=; {}; echo \"$tried\" >&2; exit 1",
        each_attempt(&attempt)
    )
}

/// The path the search-path lookup asks for: not `/`, so that the pod-to-pod rows, reading the
/// receivers' logs for requests of `/`, do not count it.
pub const LOOKUP_PATH: &str = "/search-path-lookup";

/// Resolves `name` in `pod` through the C library's resolver, which applies the search path of
/// the pod's resolv.conf (nslookup asks for the name as given): the address wget says it
/// connects to on `port` (ping would wait a second for an echo a Service's address never
/// answers). Whatever the answer (a 404), only that line counts.
pub async fn resolve_from_pod(pods: &Api<Pod>, pod: &str, name: &str, port: u16) -> Reply {
    let script = format!(
        "i=0; while [ $i -lt {LOOKUP_ATTEMPTS} ]; do out=$(timeout 2 wget -O /dev/null http://{n}:{port}{LOOKUP_PATH} 2>&1 | head -n 1); case $out in Connecting*'('*) echo \"$out\"; exit 0;; esac; i=$((i+1)); sleep 0.5; done; echo \"$out\" >&2; exit 1",
        n = shell_quote(name)
    );
    exec(pods, pod, &script).await
}

/// An HTTP GET of a pod from a node's own network namespace (bash's /dev/tcp: nothing to
/// install on the node).
pub async fn fetch_from_node(session: &Session, ip: &str, port: u16) -> Reply {
    let attempt = format!(
        "out=$(timeout $t bash -c 'exec 3<>/dev/tcp/{ip}/{port} && printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3 && cat <&3' 2>&1) && {{ printf '%s\\n' \"$out\" | tail -n 1; exit 0; }}"
    );
    let script = format!(
        "{}; printf '%s\\n' \"$out\"; exit 1",
        each_attempt(&attempt)
    );
    match session.exec(&script, None).await {
        Ok(o) if o.status == 0 => Ok(o.stdout_text()),
        Ok(o) => Err({
            let text = first_line(&o.stdout_text());
            if text.is_empty() { no_answer() } else { text }
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

    /// The retry loop as a shell runs it: every attempt until one succeeds, each under its
    /// limit, and exit 1 after the last.
    #[test]
    fn retried_commands_run_until_one_succeeds_each_within_its_limit()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("attempts");
        let run = |command: String| {
            std::process::Command::new("sh")
                .args(["-c", &retried(&command)])
                .status()
        };
        let log_s = log.display();
        // fails every time: all six attempts, then a failure
        let failed = run(format!("sh -c 'echo x >> {log_s}; exit 1'"))?;
        assert!(!failed.success());
        let lines = std::fs::read_to_string(&log)?.lines().count();
        assert_eq!(lines, ATTEMPT_LIMITS.len());
        // answers at the third attempt: stops there
        std::fs::remove_file(&log)?;
        let third = run(format!(
            "sh -c 'echo x >> {log_s}; [ $(wc -l < {log_s}) -ge 3 ]'"
        ))?;
        assert!(third.success());
        assert_eq!(std::fs::read_to_string(&log)?.lines().count(), 3);
        // an attempt that hangs is cut at its limit (1 s) and the next one starts
        std::fs::remove_file(&log)?;
        let started = std::time::Instant::now();
        let hung = run(format!(
            "sh -c 'echo x >> {log_s}; [ $(wc -l < {log_s}) -ge 2 ] || sleep 30'"
        ))?;
        assert!(hung.success());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(no_answer(), "no answer (6 attempts in 12 s)");
        Ok(())
    }

    /// A lookup that keeps failing reports nslookup's own reason for each attempt, not the
    /// server it asked; an attempt cut at its limit says so.
    #[test]
    fn a_failed_lookup_reports_why_not_the_server_line() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        crate::host::stand_in(
            dir.path(),
            "nslookup",
            "#!/bin/sh\n[ -e \"$0.1\" ] || { touch \"$0.1\"; sleep 30; }\nprintf 'Server:\\t\\t10.96.0.10\\nAddress:\\t10.96.0.10:53\\n\\n** server can'\\''t find %s: NXDOMAIN\\n\\n' \"$1\"\nexit 1\n",
        )?;
        // its stderr alone, then its exit status
        let script = format!(
            "( {} ) 2>&1 >/dev/null; echo \"exit $?\"",
            lookup_script("verify.ns.svc.cluster.local")
        );
        let out = crate::host::sh_with(&script, Some(dir.path()), &[])?;
        let nx = "** server can't find verify.ns.svc.cluster.local: NXDOMAIN";
        // the first attempt hangs and is cut after its 1 s, the others get NXDOMAIN
        let mut reasons = vec!["no answer in 1 s"];
        reasons.extend([nx; 5]);
        assert_eq!(out, format!("{}\nexit 1\n", reasons.join("; ")));
        Ok(())
    }

    #[test]
    fn urls_bracket_ipv6_addresses() {
        assert_eq!(url("10.88.1.5", 8080), "http://10.88.1.5:8080/");
        assert_eq!(url("fd00::5", 80), "http://[fd00::5]:80/");
    }
}
