//! Plans and applies a phase's actions on one host: probe (one round trip), diff, apply in order.

use super::action::{Action, FileSpec, LocalContent};
use super::batch::{Batch, Failed};
use super::diff::{self, Change, Step};
use super::facts::{self, sysctl_path};
use crate::ssh::{Session, SshError, shell_quote};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: {detail}")]
    Unfixable { host: String, detail: String },
    #[error("{host}: {summary}: {detail}")]
    Step {
        host: String,
        summary: String,
        detail: String,
    },
}

/// What one host needs, computed against its current state.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    pub changes: Vec<String>,
    pub bytes_uploaded: u64,
}

pub async fn plan(session: &Session, actions: &[Action]) -> Result<Plan, ExecError> {
    plan_knowing(session, actions, &[]).await
}

/// `plan`, with the facts of some actions (by index) already read in this run.
pub async fn plan_knowing(
    session: &Session,
    actions: &[Action],
    known: &[Option<facts::Fact>],
) -> Result<Plan, ExecError> {
    let facts = facts::gather_unknown(session, actions, known).await?;
    let changes = diff::diff(actions, &facts).map_err(|u| ExecError::Unfixable {
        host: session.host().to_string(),
        detail: u.0,
    })?;
    Ok(Plan { changes })
}

/// Applies `plan` in order. Steps that need no input wait in a batch that goes with the next
/// command (one round trip for many steps); a failed step's error names it alone.
pub async fn apply(
    session: &Session,
    actions: &[Action],
    plan: &Plan,
) -> Result<Applied, ExecError> {
    let fail = |f: Failed| step_failed(session, plan, f);
    let mut applied = Applied::default();
    let mut batch = Batch::default();
    for (i, change) in plan.changes.iter().enumerate() {
        let action = change.action.map(|i| &actions[i]);
        match (&change.step, action) {
            (Step::WriteFile | Step::Replace, Some(Action::File(f))) => {
                let replace = change.step == Step::Replace;
                match &f.local {
                    Some(local) => {
                        upload_local(session, &mut batch, i, f, local, replace)
                            .await
                            .map_err(|e| match e {
                                Upload::Failed(f) => fail(f),
                                Upload::Damaged(detail) => ExecError::Step {
                                    host: session.host().to_string(),
                                    summary: change.summary.clone(),
                                    detail,
                                },
                            })?;
                    }
                    None => {
                        let write = write_file_script(f, replace);
                        batch
                            .run_then(session, i, &write, &f.content)
                            .await
                            .map_err(fail)?;
                    }
                }
                applied.bytes_uploaded += f.size();
            }
            (step, action) => batch.push(i, step_script(session, step, action)?),
        }
        applied.changes.push(change.summary.clone());
    }
    batch.flush(session).await.map_err(fail)?;
    Ok(applied)
}

/// The error of a step that failed, named by its change.
fn step_failed(session: &Session, plan: &Plan, (i, e): Failed) -> ExecError {
    ExecError::Step {
        host: session.host().to_string(),
        summary: plan.changes[i].summary.clone(),
        detail: match e {
            SshError::Command { status, stderr, .. } => format!("exit status {status}: {stderr}"),
            other => other.to_string(),
        },
    }
}

/// The script of a step that needs no input.
fn step_script(
    session: &Session,
    step: &Step,
    action: Option<&Action>,
) -> Result<String, ExecError> {
    Ok(match (step, action) {
        (Step::FixFileMeta, Some(Action::File(f))) => {
            let p = shell_quote(&f.path);
            let mut script = format!("chmod {:o} {p} && chown {} {p}", f.mode, f.owner);
            if f.local.is_some() {
                script.push_str(&format!(
                    " && {}",
                    facts::record_digest(&f.path, &f.sha256())
                ));
            }
            script
        }
        (Step::MakeDir | Step::FixDirMeta, Some(Action::Dir { path, mode, owner })) => {
            let p = shell_quote(path);
            format!("mkdir -p {p} && chmod {mode:o} {p} && chown {owner} {p}")
        }
        (Step::Link, Some(Action::Symlink { path, target })) => {
            let (p, t) = (shell_quote(path), shell_quote(target));
            // ln into a temporary name, then rename over: the link is never missing
            format!(
                "mkdir -p \"$(dirname {p})\" && ln -sfn {t} {p}.provision-new && mv -Tf {p}.provision-new {p}"
            )
        }
        (Step::Remove, Some(Action::Absent { path })) => {
            // --one-file-system: a mount left under the path fails the step, never its
            // content; a mount point itself is emptied and stays
            let p = shell_quote(path);
            format!(
                "if mountpoint -q {p}; then find {p} -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system -- {{}} +; else rm -rf --one-file-system -- {p}; fi"
            )
        }
        (Step::SetSysctl, Some(Action::Sysctl { key, value })) => {
            let p = shell_quote(&sysctl_path(key));
            format!("printf '%s\\n' {} > {p}", shell_quote(value))
        }
        (Step::DaemonReload, None) => "systemctl daemon-reload".to_string(),
        (step, Some(Action::Unit(u))) => {
            let verb = match step {
                Step::Enable => "enable",
                Step::Disable => "disable",
                Step::Start => "start",
                Step::Stop => "stop",
                Step::Restart => "restart",
                other => unreachable_step(session, other)?,
            };
            let n = shell_quote(&u.name);
            if matches!(step, Step::Enable) {
                // the plan reloads systemd where a unit file changed; enable's own
                // reload of every unit would cost a tenth of a second more
                format!("systemctl enable --no-reload {n}")
            } else if matches!(step, Step::Start | Step::Restart) {
                // a unit that fails to start shows why
                format!(
                    "systemctl {verb} {n} || {{ systemctl status --no-pager -n 20 {n} >&2; exit 1; }}"
                )
            } else if matches!(step, Step::Stop) {
                crate::systemd::stop(&n)
            } else {
                format!("systemctl {verb} {n}")
            }
        }
        (Step::Exec, Some(Action::Exec { cmd, .. })) => cmd.clone(),
        (other, _) => unreachable_step(session, other)?,
    })
}

fn unreachable_step<T>(session: &Session, step: &Step) -> Result<T, ExecError> {
    Err(ExecError::Unfixable {
        host: session.host().to_string(),
        detail: format!("internal error: no way to apply {step:?}"),
    })
}

/// Why an upload failed: a step (its own or one sent with it), or the bytes sent.
enum Upload {
    Failed(Failed),
    Damaged(String),
}

/// Ships a big local file in two steps: stream it into a temporary file beside the target (the
/// host checks the size; this side hashes the bytes as they go), then, only when that digest
/// is the expected one, move it into place (a step left in `batch`). The host reads the file
/// once, when it writes it.
async fn upload_local(
    session: &Session,
    batch: &mut Batch,
    change: usize,
    f: &FileSpec,
    local: &LocalContent,
    replace: bool,
) -> Result<(), Upload> {
    let p = shell_quote(&f.path);
    let tmp = shell_quote(&format!("{}.provision-{}", f.path, &local.sha256[..16]));
    let receive = format!(
        "umask 077 && mkdir -p \"$(dirname {p})\" && rm -f {p}.provision-* && cat > {tmp} && \
         [ \"$(stat -c %s {tmp})\" = {size} ] || {{ rm -f {tmp}; echo 'upload incomplete: size mismatch' >&2; exit 1; }}",
        size = local.size
    );
    let sent = batch
        .run_then_file(session, change, &receive, &local.path)
        .await
        .map_err(Upload::Failed)?;
    if sent != local.sha256 {
        let _ = session.run(&format!("rm -f {tmp}")).await;
        return Err(Upload::Damaged(format!(
            "{} has sha256 {sent}, not the {} it was verified with: it changed or is damaged; fetch again (or check the bundle with `provision bundle verify`)",
            local.path.display(),
            local.sha256
        )));
    }
    let rm = if replace {
        format!("rm -rf {p} && ")
    } else {
        String::new()
    };
    batch.push(
        change,
        format!(
            "chmod {mode:o} {tmp} && chown {owner} {tmp} && {rm}mv -f {tmp} {p} && {record}",
            mode = f.mode,
            owner = f.owner,
            record = facts::record_digest(&f.path, &local.sha256)
        ),
    );
    Ok(())
}

/// Streams stdin into a temporary file beside the target, checks its digest, then renames it
/// over the target: readers never see a half-written file, and an interrupted write leaves the
/// old file in place.
fn write_file_script(f: &FileSpec, replace: bool) -> String {
    let p = shell_quote(&f.path);
    let sha = f.sha256();
    let rm = if replace {
        format!("rm -rf {p} && ")
    } else {
        String::new()
    };
    // an earlier, interrupted write may have left its temporary file: remove it first
    format!(
        "umask 077 && mkdir -p \"$(dirname {p})\" && rm -f {p}.provision-* && t=$(mktemp {p}.provision-XXXXXX) && \
         {{ cat > \"$t\" && [ \"$(sha256sum < \"$t\" | cut -c1-64)\" = {sha} ] || {{ rm -f \"$t\"; echo 'upload corrupted: digest mismatch' >&2; exit 1; }}; }} && \
         chmod {mode:o} \"$t\" && chown {owner} \"$t\" && {rm}mv -f \"$t\" {p}",
        mode = f.mode,
        owner = f.owner,
    )
}

/// The text of a dry run: each change, and for text files a unified diff (secrets hidden).
pub async fn describe(
    session: &Session,
    actions: &[Action],
    plan: &Plan,
) -> Result<Vec<String>, ExecError> {
    let mut lines = Vec::new();
    for change in &plan.changes {
        lines.push(change.summary.clone());
        let Some(Action::File(f)) = change.action.map(|i| &actions[i]) else {
            continue;
        };
        if change.step != Step::WriteFile {
            continue;
        }
        if f.secret {
            lines.push("    (content not shown: secret)".into());
            continue;
        }
        if f.local.is_some() {
            lines.push(format!("    ({} bytes from the bundle)", f.size()));
            continue;
        }
        let Ok(new) = std::str::from_utf8(&f.content) else {
            lines.push("    (binary content)".into());
            continue;
        };
        let out = session
            .exec(&format!("cat {} 2>/dev/null", shell_quote(&f.path)), None)
            .await?;
        let old = String::from_utf8_lossy(&out.stdout).into_owned();
        let text = similar::TextDiff::from_lines(old.as_str(), new)
            .unified_diff()
            .header(
                &format!("{} (host)", f.path),
                &format!("{} (wanted)", f.path),
            )
            .to_string();
        for l in text.lines() {
            lines.push(format!("    {l}"));
        }
    }
    Ok(lines)
}
