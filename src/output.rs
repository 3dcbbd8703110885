//! What the user sees: `==> phase` headers and one line per host (text), or one JSON object per
//! event (`--output json`). A spinner shows on a terminal only. In text without `-v`, the leaves
//! of a group share their parent's header, kubeadm-style: `==> certs`, then a line per
//! certificate and host.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// The result of one phase on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub host: String,
    pub status: Status,
    /// Changes made (or, in a dry run, to be made).
    pub changes: Vec<String>,
    pub bytes_uploaded: u64,
    pub warnings: Vec<String>,
    /// Always shown: what was decided and why (a certificate re-issued because ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Shown with -v or in a dry run instead of `changes`: each change followed by indented
    /// detail lines (diffs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
    /// A checking phase: it passes or fails, it never changes anything.
    #[serde(skip)]
    pub checks_only: bool,
}

impl HostOutcome {
    pub fn ok(host: &str) -> HostOutcome {
        HostOutcome {
            host: host.to_string(),
            status: Status::Ok,
            changes: Vec::new(),
            bytes_uploaded: 0,
            warnings: Vec::new(),
            notes: Vec::new(),
            details: Vec::new(),
            error: None,
            seconds: 0.0,
            checks_only: false,
        }
    }

    pub fn failed(host: &str, error: String) -> HostOutcome {
        HostOutcome {
            status: Status::Failed,
            error: Some(error),
            ..HostOutcome::ok(host)
        }
    }
}

pub struct Reporter {
    pub format: Format,
    pub verbose: bool,
    pub dry_run: bool,
    terminal: bool,
    /// The group whose header was printed last (grouped text output).
    group: Mutex<Option<OpenGroup>>,
    /// Lines kept instead of printed (tests of the output's form).
    captured: Option<Mutex<Vec<String>>>,
}

struct OpenGroup {
    path: String,
    started: Instant,
    failed: bool,
}

impl Reporter {
    pub fn new(format: Format, verbose: bool, dry_run: bool) -> Reporter {
        Reporter {
            format,
            verbose,
            dry_run,
            // host lines print through the spinner (stderr): only when both go to the terminal,
            // or stdout redirected to a file would miss them
            terminal: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            group: Mutex::new(None),
            captured: None,
        }
    }

    /// A reporter that keeps its stdout lines in memory, for [`Reporter::captured`].
    pub fn capturing(format: Format, verbose: bool, dry_run: bool) -> Reporter {
        Reporter {
            terminal: false,
            captured: Some(Mutex::new(Vec::new())),
            ..Reporter::new(format, verbose, dry_run)
        }
    }

    /// What a capturing reporter would have printed.
    pub fn captured(&self) -> String {
        let Some(lines) = &self.captured else {
            return String::new();
        };
        let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn print(&self, text: &str) {
        match &self.captured {
            Some(lines) => lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text.to_string()),
            None => println!("{text}"),
        }
    }

    fn event(&self, value: serde_json::Value) {
        self.print(&value.to_string());
    }

    /// In grouped text, a leaf `certs/ca` prints under `==> certs` as `ca`: its group and name.
    fn grouped<'a>(&self, path: &'a str) -> Option<(&'a str, &'a str)> {
        if self.format != Format::Text || self.verbose {
            return None;
        }
        path.rsplit_once('/')
    }

    /// Opens `group` (printing its header) unless it is open; closes the one before.
    fn enter_group(&self, group: Option<&str>) {
        let mut open = self.group.lock().unwrap_or_else(|e| e.into_inner());
        if open.as_ref().map(|g| g.path.as_str()) == group {
            return;
        }
        if let Some(g) = open.take() {
            self.close(&g);
        }
        if let Some(path) = group {
            self.print(&format!("==> {path}"));
            *open = Some(OpenGroup {
                path: path.to_string(),
                started: Instant::now(),
                failed: false,
            });
        }
    }

    fn close(&self, g: &OpenGroup) {
        let seconds = g.started.elapsed().as_secs_f64();
        let what = if g.failed { "failed" } else { "done" };
        self.print(&format!("    {} {what} ({seconds:.2}s)", g.path));
    }

    pub fn phase_start(&self, path: &str, hosts: usize) -> Option<ProgressBar> {
        match self.format {
            Format::Json => {
                self.event(json!({"event": "phase-start", "phase": path, "hosts": hosts}));
                None
            }
            Format::Text => {
                match self.grouped(path) {
                    Some((group, _)) => self.enter_group(Some(group)),
                    None => {
                        self.enter_group(None);
                        let s = if hosts == 1 { "" } else { "s" };
                        self.print(&format!("==> {path} ({hosts} host{s})"));
                    }
                }
                if !self.terminal {
                    return None;
                }
                let pb =
                    ProgressBar::with_draw_target(Some(hosts as u64), ProgressDrawTarget::stderr());
                pb.set_style(
                    ProgressStyle::with_template("    {spinner} {pos}/{len} hosts done {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.enable_steady_tick(Duration::from_millis(120));
                Some(pb)
            }
        }
    }

    pub fn host_done(&self, path: &str, o: &HostOutcome, progress: Option<&ProgressBar>) {
        match self.format {
            Format::Json => self.event(json!({"event": "host", "phase": path, "result": o})),
            Format::Text => {
                let label = match self.grouped(path) {
                    Some((_, leaf)) => format!("{leaf:<24} {:<16}", o.host),
                    None => o.host.clone(),
                };
                let text = self.host_text(&label, o);
                match progress {
                    Some(pb) => {
                        pb.println(text);
                        pb.inc(1);
                    }
                    None => self.print(&text),
                }
            }
        }
    }

    fn host_text(&self, label: &str, o: &HostOutcome) -> String {
        let n = o.changes.len();
        let what = match (&o.status, self.dry_run) {
            (Status::Failed, _) => "FAILED".to_string(),
            (Status::Ok, _) if o.checks_only => "passed".to_string(),
            (Status::Ok, true) if n == 0 => "ok, no changes needed".to_string(),
            (Status::Ok, true) => format!("{n} change{} needed (dry run)", plural(n)),
            (Status::Ok, false) if n == 0 => "ok, no changes".to_string(),
            (Status::Ok, false) => format!("ok, {n} change{}", plural(n)),
        };
        let mut s = format!("    {label:<16} {what} ({:.2}s)", o.seconds);
        if o.bytes_uploaded > 0 {
            s.push_str(&format!(", {} uploaded", bytes(o.bytes_uploaded)));
        }
        if let Some(e) = &o.error {
            for line in e.lines() {
                s.push_str(&format!("\n        {line}"));
            }
        }
        for n in &o.notes {
            s.push_str(&format!("\n        {n}"));
        }
        for w in &o.warnings {
            s.push_str(&format!("\n        warning: {w}"));
        }
        if (self.verbose || self.dry_run) && o.details.is_empty() {
            for c in &o.changes {
                s.push_str(&format!("\n        - {c}"));
            }
        }
        if self.verbose || self.dry_run {
            // a change, then (indented) what it does: diffs in a dry run
            for d in &o.details {
                let mark = if d.starts_with(' ') { "" } else { "- " };
                s.push_str(&format!("\n        {mark}{d}"));
            }
        }
        s
    }

    pub fn phase_done(
        &self,
        path: &str,
        outcomes: &[HostOutcome],
        seconds: f64,
        pb: Option<ProgressBar>,
    ) {
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let failed = outcomes
            .iter()
            .filter(|o| o.status == Status::Failed)
            .count();
        let changes: usize = outcomes.iter().map(|o| o.changes.len()).sum();
        match self.format {
            Format::Json => self.event(json!({
                "event": "phase-done", "phase": path, "failed": failed,
                "changes": changes, "seconds": seconds
            })),
            Format::Text if failed > 0 => {
                if self.grouped(path).is_some()
                    && let Some(g) = self
                        .group
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                {
                    g.failed = true;
                }
                self.print(&format!(
                    "    {path} failed on {failed} of {} host{} ({seconds:.2}s)",
                    outcomes.len(),
                    plural(outcomes.len())
                ))
            }
            // a leaf of a group: its hosts' lines and timings are shown; the group's total ends it
            Format::Text if self.grouped(path).is_some() => {}
            Format::Text => self.print(&format!("    {path} done ({seconds:.2}s)")),
        }
    }

    /// A structured result in JSON (one event named `event` with `value` under `key`), or
    /// `text` as it is.
    pub fn record(&self, event: &str, key: &str, value: serde_json::Value, text: &str) {
        match self.format {
            Format::Json => self.event(json!({"event": event, key: value})),
            Format::Text => print!("{text}"),
        }
    }

    pub fn note(&self, text: &str) {
        match self.format {
            Format::Json => self.event(json!({"event": "note", "text": text})),
            Format::Text => self.print(text),
        }
    }

    pub fn warning(&self, text: &str) {
        match self.format {
            Format::Json => self.event(json!({"event": "warning", "text": text})),
            Format::Text => eprintln!("{text}"),
        }
    }

    pub fn summary(&self, s: &RunSummary) {
        match self.format {
            Format::Json => self.event(json!({"event": "summary", "result": s})),
            Format::Text => {
                self.enter_group(None);
                let verb = if self.dry_run { "would make" } else { "made" };
                let outcome = if s.failed_phase.is_some() {
                    "failed"
                } else {
                    "done"
                };
                self.print(&format!(
                    "\n{} {outcome} in {:.2}s: {} phase{} run, {verb} {} change{} on {} host{}",
                    s.command,
                    s.seconds,
                    s.phases_run,
                    plural(s.phases_run),
                    s.changes,
                    plural(s.changes),
                    s.hosts,
                    plural(s.hosts)
                ));
                if let Some(p) = &s.failed_phase {
                    self.print(&format!(
                        "Phase {p} failed. Fix what is named above and run the same command again: \
                         finished work is kept, and it continues where it stopped."
                    ));
                }
                for line in &s.next_steps {
                    self.print(line);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub command: String,
    pub phases_run: usize,
    pub changes: usize,
    pub hosts: usize,
    pub seconds: f64,
    pub failed_phase: Option<String>,
    /// The hosts the failed phase failed on.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failed_hosts: Vec<String>,
    pub next_steps: Vec<String>,
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `text` with every timing (`(1.23s)`, `in 22.54s:`) written `…s`, so that output can be
/// compared from run to run.
pub fn mask_timings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '.');
        let mut end = i;
        while end < chars.len() && (chars[end].is_ascii_digit() || chars[end] == '.') {
            end += 1;
        }
        let number = &chars[i..end];
        let is_seconds = starts_word
            && number.contains(&'.')
            && number.iter().any(char::is_ascii_digit)
            && chars.get(end) == Some(&'s')
            && !chars.get(end + 1).is_some_and(|c| c.is_alphanumeric());
        if is_seconds {
            out.push('…');
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(host: &str, changes: usize) -> HostOutcome {
        HostOutcome {
            changes: (0..changes).map(|i| format!("change {i}")).collect(),
            seconds: 0.25,
            ..HostOutcome::ok(host)
        }
    }

    /// Drives a reporter through a run like init's: a top-level phase, two groups of leaves,
    /// a failure in the last group.
    fn a_run(out: &Reporter) {
        let phase = |path: &str, hosts: &[(&str, usize)]| {
            let pb = out.phase_start(path, hosts.len());
            let outcomes: Vec<HostOutcome> = hosts.iter().map(|(h, n)| outcome(h, *n)).collect();
            for o in &outcomes {
                out.host_done(path, o, pb.as_ref());
            }
            out.phase_done(path, &outcomes, 0.5, pb);
        };
        phase("preflight", &[("cp1", 0), ("worker-1", 0)]);
        phase("certs/ca", &[("cp1", 1)]);
        phase("certs/apiserver", &[("cp1", 2)]);
        phase("kubeconfig/admin", &[("cp1", 1)]);
        phase("etcd", &[("cp1", 3)]);
        let path = "host/kernel";
        let pb = out.phase_start(path, 2);
        out.host_done(path, &outcome("cp1", 1), pb.as_ref());
        let failed = HostOutcome::failed("worker-1", "sysctl: permission denied".into());
        out.host_done(path, &failed, pb.as_ref());
        out.phase_done(path, &[outcome("cp1", 1), failed], 0.5, pb);
        out.summary(&RunSummary {
            command: "init".into(),
            phases_run: 6,
            changes: 8,
            hosts: 2,
            seconds: 3.0,
            failed_phase: Some(path.into()),
            failed_hosts: vec!["cp2".into()],
            next_steps: vec![],
        });
    }

    #[test]
    fn text_groups_leaves_under_their_parent() {
        let out = Reporter::capturing(Format::Text, false, false);
        a_run(&out);
        insta::assert_snapshot!(mask_timings(&out.captured()));
    }

    #[test]
    fn verbose_text_and_json_keep_every_leaf() -> Result<(), Box<dyn std::error::Error>> {
        let out = Reporter::capturing(Format::Text, true, false);
        a_run(&out);
        let text = out.captured();
        for leaf in [
            "certs/ca",
            "certs/apiserver",
            "kubeconfig/admin",
            "host/kernel",
        ] {
            assert!(text.contains(&format!("==> {leaf} (")), "{leaf}: {text}");
            assert!(text.contains(&format!("    {leaf} ")), "{leaf}: {text}");
        }
        let out = Reporter::capturing(Format::Json, false, false);
        a_run(&out);
        let json = out.captured();
        let events = json
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<serde_json::Value>, _>>()?;
        let done: Vec<&serde_json::Value> = events
            .iter()
            .filter(|v| v["event"] == "phase-done")
            .collect();
        assert_eq!(done.len(), 6, "{json}");
        assert!(done.iter().all(|v| v["seconds"] == 0.5));
        Ok(())
    }

    #[test]
    fn timings_are_masked_and_nothing_else() {
        assert_eq!(
            mask_timings("    cp1 ok, 1 change (12.34s), (a note) (3.0s)"),
            "    cp1 ok, 1 change (…s), (a note) (…s)"
        );
        assert_eq!(
            mask_timings("init done in 22.54s: 30 phases, v1.37.2s 2.5 s 3s"),
            "init done in …s: 30 phases, v1.37.2s 2.5 s 3s"
        );
    }
}
