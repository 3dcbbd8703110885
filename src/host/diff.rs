//! Desired actions against the host's facts: the changes to make, in order.

use super::action::Action;
#[cfg(test)]
use super::action::sha256_hex;
use super::facts::Fact;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Write the whole file (content differs or file missing).
    WriteFile,
    /// Content is right; fix mode and/or owner.
    FixFileMeta,
    /// Something else stands at the path: remove it, then create.
    Replace,
    MakeDir,
    FixDirMeta,
    Link,
    /// Remove what stands at the path (Absent).
    Remove,
    SetSysctl,
    DaemonReload,
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Exec,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Index into the phase's actions (DaemonReload has none).
    pub action: Option<usize>,
    pub step: Step,
    /// What a person reads: "write /etc/sysctl.d/99-kubernetes.conf (new, 0644)".
    pub summary: String,
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

/// Problems that no change can fix (e.g. the kernel lacks a sysctl).
#[derive(Debug, Clone)]
pub struct Unfixable(pub String);

pub fn diff(actions: &[Action], facts: &[Fact]) -> Result<Vec<Change>, Unfixable> {
    let mut changes = Vec::new();
    let mut changed_paths: BTreeSet<&str> = BTreeSet::new();
    let mut unit_files_changed = false;
    let mut unit_files_removed = false;
    let push = |changes: &mut Vec<Change>, i: usize, step: Step, summary: String| {
        changes.push(Change {
            action: Some(i),
            step,
            summary,
        });
    };
    for (i, (a, f)) in actions.iter().zip(facts).enumerate() {
        match (a, f) {
            (Action::File(spec), fact) => {
                let want = spec.sha256();
                let step = match fact {
                    Fact::File {
                        sha256,
                        mode,
                        owner,
                    } if *sha256 == want => {
                        if *mode != spec.mode || *owner != spec.owner {
                            Some((
                                Step::FixFileMeta,
                                format!(
                                    "set {} to {} {} (was {} {})",
                                    spec.path,
                                    mode_str(spec.mode),
                                    spec.owner,
                                    mode_str(*mode),
                                    owner
                                ),
                            ))
                        } else {
                            None
                        }
                    }
                    Fact::File { .. } => Some((
                        Step::WriteFile,
                        format!("update {} ({} bytes)", spec.path, spec.size()),
                    )),
                    Fact::Absent => Some((
                        Step::WriteFile,
                        format!(
                            "create {} ({} bytes, {})",
                            spec.path,
                            spec.size(),
                            mode_str(spec.mode)
                        ),
                    )),
                    Fact::OtherType(t) => Some((
                        Step::Replace,
                        format!("replace the {t} at {} with a file", spec.path),
                    )),
                    other => return Err(Unfixable(format!("unexpected fact {other:?}"))),
                };
                if let Some((step, summary)) = step {
                    if step != Step::FixFileMeta {
                        changed_paths.insert(&spec.path);
                        if is_unit_file(&spec.path) {
                            unit_files_changed = true;
                        }
                    }
                    push(&mut changes, i, step, summary);
                }
            }
            (Action::Dir { path, mode, owner }, fact) => match fact {
                Fact::Dir { mode: m, owner: o } if m == mode && o == owner => {}
                Fact::Dir { mode: m, owner: o } => push(
                    &mut changes,
                    i,
                    Step::FixDirMeta,
                    format!(
                        "set {path} to {} {owner} (was {} {o})",
                        mode_str(*mode),
                        mode_str(*m)
                    ),
                ),
                Fact::Absent => push(
                    &mut changes,
                    i,
                    Step::MakeDir,
                    format!("create directory {path} ({})", mode_str(*mode)),
                ),
                Fact::OtherType(t) => {
                    return Err(Unfixable(format!(
                        "{path} is a {t}, not a directory: move it away and re-run"
                    )));
                }
                other => return Err(Unfixable(format!("unexpected fact {other:?}"))),
            },
            (Action::Symlink { path, target }, fact) => match fact {
                Fact::Link(t) if t == target => {}
                Fact::Link(t) => {
                    changed_paths.insert(path);
                    push(
                        &mut changes,
                        i,
                        Step::Link,
                        format!("point {path} to {target} (was {t})"),
                    );
                }
                Fact::Absent => {
                    changed_paths.insert(path);
                    push(
                        &mut changes,
                        i,
                        Step::Link,
                        format!("link {path} -> {target}"),
                    );
                }
                Fact::OtherType(t) => {
                    return Err(Unfixable(format!(
                        "{path} is a {t}, not a symlink: move it away and re-run"
                    )));
                }
                other => return Err(Unfixable(format!("unexpected fact {other:?}"))),
            },
            (Action::Absent { path }, fact) => match fact {
                Fact::Absent => {}
                Fact::OtherType(t) => {
                    unit_files_removed |= is_unit_file(path);
                    push(&mut changes, i, Step::Remove, format!("remove {t} {path}"));
                }
                other => return Err(Unfixable(format!("unexpected fact {other:?}"))),
            },
            (Action::Sysctl { key, value }, Fact::Sysctl(current)) => match current {
                Some(v) if normalize(v) == normalize(value) => {}
                Some(v) => push(
                    &mut changes,
                    i,
                    Step::SetSysctl,
                    format!("set {key} = {value} (was {v})"),
                ),
                // the kernel module may be loaded by an earlier action of this run
                None if earlier_exec_may_load(actions, i) => push(
                    &mut changes,
                    i,
                    Step::SetSysctl,
                    format!("set {key} = {value} (after loading its module)"),
                ),
                None => {
                    return Err(Unfixable(format!(
                        "the kernel has no {key}: load or build in the feature it belongs to"
                    )));
                }
            },
            (
                Action::Unit(u),
                Fact::Unit {
                    exists,
                    enabled,
                    active,
                    needs_reload,
                    stale,
                    changed_since_start,
                },
            ) => {
                // also where a run that stopped early wrote a unit file and never reloaded
                if (unit_files_changed || *needs_reload)
                    && !changes.iter().any(|c| c.step == Step::DaemonReload)
                {
                    changes.push(Change {
                        action: None,
                        step: Step::DaemonReload,
                        summary: if unit_files_changed {
                            "reload systemd (unit files changed)".into()
                        } else {
                            format!(
                                "reload systemd ({} changed on disk since it read it)",
                                u.name
                            )
                        },
                    });
                }
                let _ = exists;
                if u.enabled && !enabled {
                    push(&mut changes, i, Step::Enable, format!("enable {}", u.name));
                } else if !u.enabled && *enabled {
                    push(
                        &mut changes,
                        i,
                        Step::Disable,
                        format!("disable {}", u.name),
                    );
                }
                let inputs: Vec<&str> = u
                    .restart_when_changed
                    .iter()
                    .filter(|p| changed_paths.contains(p.as_str()))
                    .map(String::as_str)
                    .collect();
                if u.active && !active {
                    push(&mut changes, i, Step::Start, format!("start {}", u.name));
                } else if !u.active && *active {
                    push(&mut changes, i, Step::Stop, format!("stop {}", u.name));
                } else if u.active && !inputs.is_empty() {
                    push(
                        &mut changes,
                        i,
                        Step::Restart,
                        format!("restart {} ({} changed)", u.name, inputs.join(", ")),
                    );
                } else if u.active && *active && !changed_since_start.is_empty() {
                    push(
                        &mut changes,
                        i,
                        Step::Restart,
                        format!(
                            "restart {} ({} changed since it started)",
                            u.name,
                            changed_since_start.join(", ")
                        ),
                    );
                } else if let (true, Some(old)) = (u.active && *active, stale) {
                    push(
                        &mut changes,
                        i,
                        Step::Restart,
                        format!("restart {} (it runs {old}, no longer its binary)", u.name),
                    );
                }
            }
            (Action::Exec { label, .. }, Fact::Done(done)) => {
                if !done {
                    push(&mut changes, i, Step::Exec, format!("run: {label}"));
                }
            }
            (a, f) => {
                return Err(Unfixable(format!(
                    "probe of {} returned {f:?}",
                    a.subject()
                )));
            }
        }
    }
    // systemd forgets removed units only when told
    if unit_files_removed {
        changes.push(Change {
            action: None,
            step: Step::DaemonReload,
            summary: "reload systemd (unit files removed)".into(),
        });
    }
    Ok(changes)
}

fn is_unit_file(path: &str) -> bool {
    path.starts_with("/etc/systemd/system/") || path.starts_with("/usr/lib/systemd/system/")
}

fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn earlier_exec_may_load(actions: &[Action], i: usize) -> bool {
    actions[..i]
        .iter()
        .any(|a| matches!(a, Action::Exec { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::action::UnitSpec;

    fn unit(restart_on: &str) -> Action {
        Action::Unit(UnitSpec {
            name: "demo.service".into(),
            enabled: true,
            active: true,
            restart_when_changed: vec![restart_on.into()],
        })
    }

    #[test]
    fn nothing_to_do_when_host_matches() -> Result<(), Box<dyn std::error::Error>> {
        let actions = vec![
            Action::file("/etc/a", "x", 0o644),
            Action::dir("/etc/kubernetes", 0o755),
            Action::sysctl("net.ipv4.ip_forward", "1"),
            unit("/etc/a"),
        ];
        let facts = vec![
            Fact::File {
                sha256: sha256_hex(b"x"),
                mode: 0o644,
                owner: "root:root".into(),
            },
            Fact::Dir {
                mode: 0o755,
                owner: "root:root".into(),
            },
            Fact::Sysctl(Some("1".into())),
            Fact::Unit {
                exists: true,
                enabled: true,
                active: true,
                needs_reload: false,
                stale: None,
                changed_since_start: Vec::new(),
            },
        ];
        assert!(
            diff(&actions, &facts)
                .map_err(|e| format!("{e:?}"))?
                .is_empty()
        );
        Ok(())
    }

    /// The steps for demo.service's unit file and unit, against the file the host has and
    /// the unit's state.
    fn unit_file_steps(
        on_host: &[u8],
        active: bool,
        needs_reload: bool,
    ) -> Result<Vec<Step>, Box<dyn std::error::Error>> {
        let actions = vec![
            Action::file("/etc/systemd/system/demo.service", "[Service]", 0o644),
            unit("/etc/systemd/system/demo.service"),
        ];
        let facts = vec![
            Fact::File {
                sha256: sha256_hex(on_host),
                mode: 0o644,
                owner: "root:root".into(),
            },
            Fact::Unit {
                exists: true,
                enabled: true,
                active,
                needs_reload,
                stale: None,
                changed_since_start: Vec::new(),
            },
        ];
        Ok(diff(&actions, &facts)
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(|c| c.step)
            .collect())
    }

    /// A run that wrote a unit file and stopped before its daemon-reload: the next run finds
    /// the file as wanted, and reloads systemd all the same, before it starts the unit.
    #[test]
    fn a_unit_systemd_read_before_its_file_changed_gets_a_reload()
    -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            unit_file_steps(b"[Service]", false, true)?,
            vec![Step::DaemonReload, Step::Start]
        );
        assert_eq!(
            unit_file_steps(b"[Service]", false, false)?,
            vec![Step::Start]
        );
        Ok(())
    }

    #[test]
    fn changed_input_restarts_its_unit_after_a_reload() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            unit_file_steps(b"old", true, false)?,
            vec![Step::WriteFile, Step::DaemonReload, Step::Restart]
        );
        Ok(())
    }

    #[test]
    fn a_unit_running_a_switched_binary_restarts() -> Result<(), Box<dyn std::error::Error>> {
        let old = "/opt/provision/kubelet/1.36.4/kubelet";
        let changes = diff(
            &[unit("/etc/a")],
            &[Fact::Unit {
                exists: true,
                enabled: true,
                active: true,
                needs_reload: false,
                stale: Some(old.into()),
                changed_since_start: Vec::new(),
            }],
        )
        .map_err(|e| format!("{e:?}"))?;
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].step, Step::Restart);
        assert!(changes[0].summary.contains(old), "{}", changes[0].summary);
        // a stopped unit starts (on its new binary): no restart on top
        let stopped = diff(
            &[unit("/etc/a")],
            &[Fact::Unit {
                exists: true,
                enabled: true,
                active: false,
                needs_reload: false,
                stale: Some(old.into()),
                changed_since_start: Vec::new(),
            }],
        )
        .map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            stopped.into_iter().map(|c| c.step).collect::<Vec<_>>(),
            [Step::Start]
        );
        Ok(())
    }

    #[test]
    fn a_unit_whose_inputs_were_written_after_it_started_restarts_once()
    -> Result<(), Box<dyn std::error::Error>> {
        let renewed = |changed: &[&str]| Fact::Unit {
            exists: true,
            enabled: true,
            active: true,
            needs_reload: false,
            stale: None,
            changed_since_start: changed.iter().map(|c| c.to_string()).collect(),
        };
        let changes = diff(&[unit("/etc/a.crt")], &[renewed(&["/etc/a.crt"])])
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].step, Step::Restart);
        assert_eq!(
            changes[0].summary,
            "restart demo.service (/etc/a.crt changed since it started)"
        );
        // restarted, it started after the write: nothing more
        assert!(
            diff(&[unit("/etc/a.crt")], &[renewed(&[])])
                .map_err(|e| format!("{e:?}"))?
                .is_empty()
        );
        Ok(())
    }

    #[test]
    fn mode_only_change_does_not_rewrite_or_restart() -> Result<(), Box<dyn std::error::Error>> {
        let actions = vec![Action::secret_file("/etc/k", "s"), unit("/etc/k")];
        let facts = vec![
            Fact::File {
                sha256: sha256_hex(b"s"),
                mode: 0o644,
                owner: "root:root".into(),
            },
            Fact::Unit {
                exists: true,
                enabled: true,
                active: true,
                needs_reload: false,
                stale: None,
                changed_since_start: Vec::new(),
            },
        ];
        let changes = diff(&actions, &facts).map_err(|e| format!("{e:?}"))?;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].step, Step::FixFileMeta);
        Ok(())
    }

    #[test]
    fn missing_sysctl_is_unfixable_without_a_loader() {
        let actions = vec![Action::sysctl("net.bridge.bridge-nf-call-iptables", "1")];
        let err = diff(&actions, &[Fact::Sysctl(None)]).unwrap_err();
        assert!(err.0.contains("net.bridge.bridge-nf-call-iptables"));
    }

    #[test]
    fn absent_removes_what_stands_there_and_reloads_after_unit_files()
    -> Result<(), Box<dyn std::error::Error>> {
        let actions = vec![
            Action::Unit(UnitSpec {
                name: "demo.service".into(),
                enabled: false,
                active: false,
                restart_when_changed: Vec::new(),
            }),
            Action::absent("/etc/systemd/system/demo.service"),
            Action::absent("/var/lib/demo"),
            Action::absent("/etc/gone"),
        ];
        let facts = vec![
            Fact::Unit {
                exists: true,
                enabled: true,
                active: true,
                needs_reload: false,
                stale: None,
                changed_since_start: Vec::new(),
            },
            Fact::OtherType("regular file".into()),
            Fact::OtherType("directory".into()),
            Fact::Absent,
        ];
        let changes = diff(&actions, &facts).map_err(|e| format!("{e:?}"))?;
        let steps: Vec<&Step> = changes.iter().map(|c| &c.step).collect();
        assert_eq!(
            steps,
            [
                &Step::Disable,
                &Step::Stop,
                &Step::Remove,
                &Step::Remove,
                &Step::DaemonReload
            ]
        );
        assert_eq!(changes[3].summary, "remove directory /var/lib/demo");
        // once gone and stopped: nothing to do
        let done = vec![
            Fact::Unit {
                exists: false,
                enabled: false,
                active: false,
                needs_reload: false,
                stale: None,
                changed_since_start: Vec::new(),
            },
            Fact::Absent,
            Fact::Absent,
            Fact::Absent,
        ];
        assert!(
            diff(&actions, &done)
                .map_err(|e| format!("{e:?}"))?
                .is_empty()
        );
        Ok(())
    }
}
