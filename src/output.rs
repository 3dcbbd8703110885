//! What the user sees: `==> phase` headers and one line per host (text), or one JSON object per
//! event (`--output json`). A spinner shows on a terminal only.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use std::io::IsTerminal;
use std::time::Duration;

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
        }
    }

    fn event(&self, value: serde_json::Value) {
        println!("{value}");
    }

    pub fn phase_start(&self, path: &str, hosts: usize) -> Option<ProgressBar> {
        match self.format {
            Format::Json => {
                self.event(json!({"event": "phase-start", "phase": path, "hosts": hosts}));
                None
            }
            Format::Text => {
                let s = if hosts == 1 { "" } else { "s" };
                println!("==> {path} ({hosts} host{s})");
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
                let text = self.host_text(o);
                match progress {
                    Some(pb) => {
                        pb.println(text);
                        pb.inc(1);
                    }
                    None => println!("{text}"),
                }
            }
        }
    }

    fn host_text(&self, o: &HostOutcome) -> String {
        let n = o.changes.len();
        let what = match (&o.status, self.dry_run) {
            (Status::Failed, _) => "FAILED".to_string(),
            (Status::Ok, _) if o.checks_only => "passed".to_string(),
            (Status::Ok, true) if n == 0 => "ok, no changes needed".to_string(),
            (Status::Ok, true) => format!("{n} change{} needed (dry run)", plural(n)),
            (Status::Ok, false) if n == 0 => "ok, no changes".to_string(),
            (Status::Ok, false) => format!("ok, {n} change{}", plural(n)),
        };
        let mut s = format!("    {:<16} {what} ({:.2}s)", o.host, o.seconds);
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
            Format::Text if failed > 0 => println!(
                "    {path} failed on {failed} of {} host{} ({seconds:.2}s)",
                outcomes.len(),
                plural(outcomes.len())
            ),
            Format::Text => println!("    {path} done ({seconds:.2}s)"),
        }
    }

    pub fn note(&self, text: &str) {
        match self.format {
            Format::Json => self.event(json!({"event": "note", "text": text})),
            Format::Text => println!("{text}"),
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
                let verb = if self.dry_run { "would make" } else { "made" };
                let outcome = if s.failed_phase.is_some() {
                    "failed"
                } else {
                    "done"
                };
                println!(
                    "\n{} {outcome} in {:.2}s: {} phase{} run, {verb} {} change{} on {} host{}",
                    s.command,
                    s.seconds,
                    s.phases_run,
                    plural(s.phases_run),
                    s.changes,
                    plural(s.changes),
                    s.hosts,
                    plural(s.hosts)
                );
                if let Some(p) = &s.failed_phase {
                    println!(
                        "Phase {p} failed. Fix what is named above and run the same command again: \
                         finished work is kept, and it continues where it stopped."
                    );
                }
                for line in &s.next_steps {
                    println!("{line}");
                }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub command: String,
    pub phases_run: usize,
    pub changes: usize,
    pub hosts: usize,
    pub seconds: f64,
    pub failed_phase: Option<String>,
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
