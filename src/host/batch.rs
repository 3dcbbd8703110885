//! A run of a plan's steps sent as one command: each step's script in a subshell, in order,
//! stopping at the first that fails, whose error names that step alone. A fresh host's
//! artifacts phase has about a hundred small steps (directories, modes, links); one round trip
//! each cost most of the phase.

use crate::ssh::{Session, SshError};
use std::path::Path;

/// Marks on stderr where a step's output begins (a control character no step prints).
const MARK: &str = "\u{1e}provision-step ";

/// Steps waiting to be sent, each with the index of its change in the plan.
#[derive(Debug, Default)]
pub struct Batch {
    steps: Vec<(usize, String)>,
}

/// A step that failed: its change's index, and the error of its script alone.
pub type Failed = (usize, SshError);

impl Batch {
    pub fn push(&mut self, change: usize, script: String) {
        self.steps.push((change, script));
    }

    /// Runs the waiting steps.
    pub async fn flush(&mut self, session: &Session) -> Result<(), Failed> {
        if self.steps.is_empty() {
            return Ok(());
        }
        let steps = std::mem::take(&mut self.steps);
        let script = script(&steps);
        let out = session.exec(&script, None).await;
        settle(session, &steps, out).map(|_| ())
    }

    /// Runs the waiting steps, then `last` (change `change`) with `input` on its stdin; its
    /// stdout.
    pub async fn run_then(
        &mut self,
        session: &Session,
        change: usize,
        last: &str,
        input: &[u8],
    ) -> Result<String, Failed> {
        let steps = self.take_with(change, last);
        let out = session.exec(&script(&steps), Some(input)).await;
        settle(session, &steps, out)
    }

    /// Runs the waiting steps, then `last` (change `change`) with the local file `path` streamed
    /// to its stdin; the sha256 of the bytes sent.
    pub async fn run_then_file(
        &mut self,
        session: &Session,
        change: usize,
        last: &str,
        path: &Path,
    ) -> Result<String, Failed> {
        let steps = self.take_with(change, last);
        let mut out = session.exec_file(&script(&steps), path).await;
        let sent = out
            .as_mut()
            .ok()
            .and_then(|o| o.sent_sha256.take())
            .unwrap_or_default();
        settle(session, &steps, out).map(|_| sent)
    }

    fn take_with(&mut self, change: usize, last: &str) -> Vec<(usize, String)> {
        let mut steps = std::mem::take(&mut self.steps);
        steps.push((change, last.to_string()));
        steps
    }
}

/// One script for `steps`: a lone step as it is; several each in a subshell after its mark.
/// Only the last reads stdin; when an earlier one fails, stdin is read to its end, so that a
/// file being streamed is not left hanging.
fn script(steps: &[(usize, String)]) -> String {
    if let [(_, only)] = steps {
        return only.clone();
    }
    let mut s = format!(
        "# provision: {} steps\nprovision_mark() {{ printf '\\n\\036provision-step %s\\n' \"$1\" >&2; }}\n",
        steps.len()
    );
    for (i, (_, step)) in steps.iter().enumerate() {
        if i + 1 == steps.len() {
            s.push_str(&format!("provision_mark {i}; ( {step}\n)\n"));
        } else {
            s.push_str(&format!(
                "provision_mark {i}; ( {step}\n) </dev/null || {{ s=$?; cat >/dev/null; exit $s; }}\n"
            ));
        }
    }
    s
}

/// The outcome of `steps`, run as `script(steps)`: stdout, or the failed step with its own
/// command and stderr.
fn settle(
    session: &Session,
    steps: &[(usize, String)],
    out: Result<crate::ssh::Output, SshError>,
) -> Result<String, Failed> {
    // a failure on the way (not of a step) belongs to the last step: it was the one streaming
    let last = steps.last().map_or(0, |(c, _)| *c);
    let out = out.map_err(|e| (last, e))?;
    if out.status == 0 {
        return Ok(out.stdout_text());
    }
    let (at, stderr) = failed_step(steps.len(), &out.stderr_text());
    let (change, step) = &steps[at.min(steps.len() - 1)];
    Err((
        *change,
        SshError::Command {
            host: session.host().to_string(),
            command: crate::ssh::summarize(step),
            status: out.status,
            stderr,
        },
    ))
}

/// Which of `count` steps failed, and what it printed on stderr: the text after the last mark.
fn failed_step(count: usize, stderr: &str) -> (usize, String) {
    if count == 1 {
        return (0, stderr.to_string());
    }
    let Some(at) = stderr.rfind(MARK) else {
        return (count - 1, stderr.trim().to_string());
    };
    let rest = &stderr[at + MARK.len()..];
    let (index, text) = rest.split_once('\n').unwrap_or((rest, ""));
    (
        index.trim().parse().unwrap_or(count - 1),
        text.trim().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs `script` with `sh`, `input` on stdin: status and stderr.
    fn run(script: &str, input: &[u8]) -> Result<(i32, String), Box<dyn std::error::Error>> {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // every script here reads its stdin to the end: a write that fails is a step that did not
        child
            .stdin
            .take()
            .ok_or("sh has no stdin")?
            .write_all(input)?;
        let out = child.wait_with_output()?;
        Ok((
            out.status.code().ok_or("sh was killed by a signal")?,
            String::from_utf8(out.stderr)?,
        ))
    }

    fn steps(scripts: &[&str]) -> Vec<(usize, String)> {
        scripts
            .iter()
            .enumerate()
            .map(|(i, s)| (10 + i, s.to_string()))
            .collect()
    }

    #[test]
    fn steps_run_in_order_and_the_first_failure_stops_the_rest()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display();
        let all = steps(&[
            &format!("echo noise >&2; touch {d}/first"),
            // a step's own exit leaves its subshell only
            "echo boom >&2; exit 3",
            &format!("touch {d}/third"),
        ]);
        let (status, stderr) = run(&script(&all), b"")?;
        assert_eq!(status, 3);
        assert!(dir.path().join("first").exists());
        assert!(!dir.path().join("third").exists());
        assert_eq!(failed_step(3, &stderr), (1, "boom".to_string()));
        Ok(())
    }

    #[test]
    fn only_the_last_step_reads_stdin() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display();
        let all = steps(&[
            &format!("cat > {d}/early"),
            "exit 0",
            &format!("cat > {d}/last"),
        ]);
        let (status, _) = run(&script(&all), b"payload")?;
        assert_eq!(status, 0);
        assert_eq!(std::fs::read(dir.path().join("early"))?, b"");
        assert_eq!(std::fs::read(dir.path().join("last"))?, b"payload");
        Ok(())
    }

    #[test]
    fn a_failure_before_a_stream_reads_the_stream_to_its_end()
    -> Result<(), Box<dyn std::error::Error>> {
        // more than a pipe holds: the write finishes only if the script reads it all
        let input = vec![b'x'; 1 << 20];
        let all = steps(&["echo no room >&2; exit 1", "cat > /dev/null"]);
        let (status, stderr) = run(&script(&all), &input)?;
        assert_eq!(status, 1);
        assert_eq!(failed_step(2, &stderr), (0, "no room".to_string()));
        Ok(())
    }

    #[test]
    fn a_lone_step_runs_as_it_is() {
        assert_eq!(script(&steps(&["true"])), "true");
        assert_eq!(
            failed_step(1, "plain error"),
            (0, "plain error".to_string())
        );
    }
}
