//! What a host has now, for every action of a phase, gathered in one SSH round trip.

use super::action::Action;
use crate::ssh::{Session, SshError, shell_quote};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Absent,
    /// Something of another type stands at the path.
    OtherType(String),
    File {
        sha256: String,
        mode: u32,
        owner: String,
    },
    Dir {
        mode: u32,
        owner: String,
    },
    Link(String),
    /// The kernel parameter's value, or None when the kernel has no such parameter.
    Sysctl(Option<String>),
    Unit {
        exists: bool,
        enabled: bool,
        active: bool,
        /// systemd holds an older version of its unit files than the disk has.
        needs_reload: bool,
        /// The executable its main process runs when that is no longer the file its ExecStart
        /// names (a version switched behind a symlink, a binary replaced): it needs a restart.
        stale: Option<String>,
        /// Its inputs (`restart_when_changed`) written since its main process started (a
        /// certificate renewed by another phase or command): it needs a restart to load them.
        changed_since_start: Vec<String>,
    },
    /// Whether the `unless` check of an Exec succeeded.
    Done(bool),
}

/// Beside a big uploaded file: its sha256, then its size, inode and ctime when it was written.
pub const DIGEST_MEMO: &str = ".provision-sha256";

/// Shell that records `path`'s digest with its current size, inode and ctime.
pub fn record_digest(path: &str, sha256: &str) -> String {
    let p = shell_quote(path);
    let memo = shell_quote(&format!("{path}{DIGEST_MEMO}"));
    format!("{{ echo {sha256}; stat -c '%s %i %z' {p}; }} > {memo}")
}

/// The name of a file type from `find`'s letter for it (`stat`'s words).
pub fn type_name(letter: &str) -> String {
    match letter {
        "f" => "regular file",
        "d" => "directory",
        "l" => "link",
        "p" => "fifo",
        "s" => "socket",
        "b" => "block special file",
        "c" => "character special file",
        other => other,
    }
    .to_string()
}

pub fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// `unit_state UNIT INPUT...` prints `<load> <enablement> <activity> <reload> <inputs> <stale
/// exe>`: reload is `reload` when systemd holds an older version of the unit's files than the
/// disk (written by a run that stopped before its daemon-reload), else `-`; the
/// inputs (comma-separated, `-` for none) are the files written after the unit's main process
/// started; the stale exe (else nothing) is what that process runs when it is no longer the file
/// ExecStart names (symlinks resolved; a replaced file shows as "(deleted)"): it needs a
/// restart. One `systemctl show` per unit: a call costs milliseconds, and a no-op run reads
/// every unit of every phase. An upgrade's rollback asks it too.
pub(crate) const UNIT_STATE: &str = r#"unit_state() {
  u=$1; shift
  load=- file=- active=- reload=- pid=0 start= path=
  while IFS='=' read -r k v; do
    case $k in
      LoadState) load=${v:--} ;;
      UnitFileState) file=${v:--} ;;
      ActiveState) active=${v:--} ;;
      NeedDaemonReload) [ "$v" = yes ] && reload=reload ;;
      MainPID) pid=${v:-0} ;;
      ExecMainStartTimestamp) start=$v ;;
      ExecStart) case $v in *path=*) path=${v#*path=}; path=${path%% *} ;; esac ;;
    esac
  done <<UNIT
$(systemctl show -p LoadState -p UnitFileState -p ActiveState -p NeedDaemonReload -p MainPID -p ExecMainStartTimestamp -p ExecStart "$u" 2>/dev/null)
UNIT
  changed= stale=
  if [ "$pid" != 0 ]; then
    if [ $# -gt 0 ] && started=$(date -d "$start" +%s 2>/dev/null); then
      changed=$(stat -L -c '%Y %n' -- "$@" 2>/dev/null | while read -r m f; do [ "$m" -gt "$started" ] && printf ',%s' "$f"; done)
    fi
    if [ -n "$path" ] && exe=$(readlink "/proc/$pid/exe" 2>/dev/null) && [ "$exe" != "$(readlink -f "$path")" ]; then stale=$exe; fi
  fi
  changed=${changed#,}
  echo "$load $file $active $reload ${changed:--} $stale"
}
"#;

/// One shell script that prints a line `<index> <fact...>` for each action.
pub fn probe_script(actions: &[Action]) -> String {
    let mut s = format!(
        "# provision: read the state of {} item(s)\n{UNIT_STATE}",
        actions.len()
    );
    for (i, a) in actions.iter().enumerate() {
        let line = match a {
            // files, directories and links: one `find` for all of them, below
            Action::File(_) | Action::Dir { .. } | Action::Symlink { .. } => continue,
            Action::Absent { path } => {
                let p = shell_quote(path);
                format!(
                    "if [ -L {p} ]; then echo \"{i} other link\"; elif mountpoint -q {p}; then if [ -n \"$(ls -A {p})\" ]; then echo \"{i} other contents_of_mount_point\"; else echo \"{i} absent\"; fi; elif [ -e {p} ]; then echo \"{i} other $(stat -c %F {p} | tr ' ' _)\"; else echo \"{i} absent\"; fi"
                )
            }
            Action::Sysctl { key, .. } => {
                let p = shell_quote(&sysctl_path(key));
                format!(
                    "if [ -e {p} ]; then echo \"{i} sysctl $(tr -s ' \\t' '  ' < {p})\"; else echo \"{i} nosysctl\"; fi"
                )
            }
            Action::Unit(u) => {
                let n = shell_quote(&u.name);
                let inputs: Vec<String> = u
                    .restart_when_changed
                    .iter()
                    .map(|p| shell_quote(p))
                    .collect();
                format!("echo \"{i} unit $(unit_state {n} {})\"", inputs.join(" "))
            }
            Action::Exec { unless, .. } => format!(
                "if ( {unless} ) >/dev/null 2>&1; then echo \"{i} done\"; else echo \"{i} todo\"; fi"
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str(&paths_script(actions));
    s.push_str(&shipped_files_script(actions));
    s
}

/// The facts of the files (but those shipped from the bundle), directories and links of a
/// phase: those absent, then one `find` that tells the type, mode, owner and link target of
/// all of them, and one `sha256sum` of the files (a process per path costs milliseconds, and
/// a no-op run reads every path of every phase). A file's digest comes on a line of its own
/// (`<i> sha <digest>`), which `parse` joins to the file's line.
fn paths_script(actions: &[Action]) -> String {
    let mut entries: Vec<(usize, &str, String)> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let (kind, path) = match a {
            Action::File(f) if f.local.is_none() => ("file", &f.path),
            Action::Dir { path, .. } => ("dir", path),
            Action::Symlink { path, .. } => ("link", path),
            _ => continue,
        };
        entries.push((i, kind, shell_quote(path)));
    }
    if entries.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    for (i, _, p) in &entries {
        s.push_str(&format!(
            "[ -e {p} ] || [ -L {p} ] || echo \"{i} absent\"\n"
        ));
    }
    // `<index>:<kind>` of every entry at a path (a path may stand in two actions)
    let cases = |of: &dyn Fn(&str) -> bool| -> String {
        let mut at: Vec<(&str, Vec<String>)> = Vec::new();
        for (i, k, p) in entries.iter().filter(|(_, k, _)| of(k)) {
            match at.iter_mut().find(|(q, _)| q == p) {
                Some((_, ids)) => ids.push(format!("{i}:{k}")),
                None => at.push((p, vec![format!("{i}:{k}")])),
            }
        }
        at.iter()
            .map(|(p, ids)| format!("{p}) ids='{}' ;;", ids.join(" ")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let files: Vec<&str> = entries
        .iter()
        .filter(|(_, k, _)| *k == "file")
        .map(|(_, _, p)| p.as_str())
        .collect();
    if !files.is_empty() {
        // a link's target is hashed too, and ignored: the link is reported as one
        s.push_str(&format!(
            "sha256sum -- {} 2>/dev/null | while read -r h n; do\n\
             \x20 case $n in {} *) continue ;; esac\n\
             \x20 for e in $ids; do echo \"${{e%:*}} sha $h\"; done\n\
             done\n",
            files.join(" "),
            cases(&|k| k == "file"),
        ));
    }
    let paths: Vec<&str> = entries.iter().map(|(_, _, p)| p.as_str()).collect();
    s.push_str(&format!(
        "find {} -maxdepth 0 -printf '%p|%y|%m %u:%g|%l\\n' 2>/dev/null | while IFS='|' read -r n t m l; do\n\
         \x20 case $n in {} *) continue ;; esac\n\
         \x20 for e in $ids; do i=${{e%:*}}; case ${{e#*:}}$t in\n\
         \x20   filef) echo \"$i file - $m\" ;;\n\
         \x20   dird) echo \"$i dir $m\" ;;\n\
         \x20   linkl) echo \"$i link $l\" ;;\n\
         \x20   *) echo \"$i stands $t\" ;;\n\
         \x20 esac; done\n\
         done\n",
        paths.join(" "),
        cases(&|_| true),
    ));
    s
}

/// The facts of the files shipped from the bundle (tens per phase): those absent, then one
/// `stat` of all of them (a `stat` per file costs a process each), trusting the digest
/// recorded at upload while size, inode and ctime are those recorded with it (no write,
/// rename or chmod since; ctime cannot be set back), else hashing the file.
fn shipped_files_script(actions: &[Action]) -> String {
    let shipped: Vec<(usize, String)> = actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Action::File(f) if f.local.is_some() => Some((i, shell_quote(&f.path))),
            _ => None,
        })
        .collect();
    if shipped.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    for (i, p) in &shipped {
        s.push_str(&format!(
            "[ -e {p} ] || [ -L {p} ] || echo \"{i} absent\"\n"
        ));
    }
    let paths: Vec<&str> = shipped.iter().map(|(_, p)| p.as_str()).collect();
    let cases: Vec<String> = shipped
        .iter()
        .map(|(i, p)| format!("{p}) i={i} ;;"))
        .collect();
    s.push_str(&format!(
        "stat -c '%n|%F|%a %U:%G|%s %i %z' -- {} 2>/dev/null | while IFS='|' read -r n t m st; do\n\
         \x20 case $n in {} esac\n\
         \x20 case $t in\n\
         \x20   'symbolic link') echo \"$i other link\" ;;\n\
         \x20   regular*) h=; if [ -f \"$n{DIGEST_MEMO}\" ]; then {{ read -r mh; read -r mst; }} < \"$n{DIGEST_MEMO}\"; [ \"$mst\" = \"$st\" ] && h=$mh; fi\n\
         \x20     [ -n \"$h\" ] || h=$(sha256sum < \"$n\" | cut -c1-64); echo \"$i file $h $m\" ;;\n\
         \x20   *) echo \"$i other $t\" ;;\n\
         \x20 esac\n\
         done\n",
        paths.join(" "),
        cases.join(" ")
    ));
    s
}

pub fn parse(actions: &[Action], output: &str) -> Result<Vec<Fact>, String> {
    let mut facts: Vec<Option<Fact>> = vec![None; actions.len()];
    let mut digests: Vec<Option<String>> = vec![None; actions.len()];
    for line in output.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(idx), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(i) = idx.parse::<usize>() else {
            continue;
        };
        let rest = words.next().unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let mode = |s: &str| u32::from_str_radix(s, 8).map_err(|_| format!("bad mode in `{line}`"));
        let fact = match (kind, fields.as_slice()) {
            ("absent", _) => Fact::Absent,
            ("other", _) => Fact::OtherType(rest.replace('_', " ")),
            // something else than wanted, by `find`'s letter for its type
            ("stands", [t]) => Fact::OtherType(type_name(t)),
            ("file", [sha, m, owner]) => Fact::File {
                sha256: sha.to_string(),
                mode: mode(m)?,
                owner: owner.to_string(),
            },
            ("dir", [m, owner]) => Fact::Dir {
                mode: mode(m)?,
                owner: owner.to_string(),
            },
            ("link", _) => Fact::Link(rest.to_string()),
            ("sysctl", _) => Fact::Sysctl(Some(rest.trim().to_string())),
            ("nosysctl", _) => Fact::Sysctl(None),
            ("unit", f) => {
                let load = f.first().copied().unwrap_or("");
                let enabled = f.get(1).copied().unwrap_or("");
                let active = f.get(2).copied().unwrap_or("");
                Fact::Unit {
                    exists: load == "loaded",
                    enabled: matches!(enabled, "enabled" | "enabled-runtime" | "static" | "alias"),
                    active: matches!(active, "active" | "activating" | "reloading"),
                    needs_reload: f.get(3) == Some(&"reload"),
                    changed_since_start: f
                        .get(4)
                        .filter(|c| **c != "-")
                        .map(|c| c.split(',').map(String::from).collect())
                        .unwrap_or_default(),
                    stale: (f.len() > 5).then(|| f[5..].join(" ")),
                }
            }
            ("sha", [sha]) => {
                if let Some(d) = digests.get_mut(i) {
                    *d = Some(sha.to_string());
                }
                continue;
            }
            ("done", _) => Fact::Done(true),
            ("todo", _) => Fact::Done(false),
            _ => return Err(format!("unexpected probe output `{line}`")),
        };
        if i < facts.len() {
            facts[i] = Some(fact);
        }
    }
    facts
        .into_iter()
        .zip(digests)
        .enumerate()
        .map(|(i, (f, digest))| match f {
            // the digest came on its own line (`paths_script`)
            Some(Fact::File {
                sha256,
                mode,
                owner,
            }) if sha256 == "-" => Ok(Fact::File {
                sha256: digest.ok_or_else(|| format!("no digest of {}", actions[i].subject()))?,
                mode,
                owner,
            }),
            Some(f) => Ok(f),
            None => Err(format!("no probe output for {}", actions[i].subject())),
        })
        .collect()
}

pub async fn gather(session: &Session, actions: &[Action]) -> Result<Vec<Fact>, SshError> {
    gather_unknown(session, actions, &[]).await
}

/// The facts of `actions`, where `known` (by index) holds those already read in this run
/// (a phase's probe of the same path): only the others are read, in one round trip, or none.
pub async fn gather_unknown(
    session: &Session,
    actions: &[Action],
    known: &[Option<Fact>],
) -> Result<Vec<Fact>, SshError> {
    let unknown: Vec<usize> = (0..actions.len())
        .filter(|i| known.get(*i).is_none_or(Option::is_none))
        .collect();
    let mut read = Vec::new();
    if !unknown.is_empty() {
        let asked: Vec<Action> = unknown.iter().map(|i| actions[*i].clone()).collect();
        let out = session.run(&probe_script(&asked)).await?;
        read = parse(&asked, &out).map_err(|detail| SshError::Channel {
            host: session.host().to_string(),
            detail,
        })?;
    }
    merge(actions, known, unknown.into_iter().zip(read)).map_err(|detail| SshError::Channel {
        host: session.host().to_string(),
        detail,
    })
}

/// Every action's fact: those `read` (by index, in order), else the `known` one.
fn merge(
    actions: &[Action],
    known: &[Option<Fact>],
    read: impl IntoIterator<Item = (usize, Fact)>,
) -> Result<Vec<Fact>, String> {
    let mut read = read.into_iter().peekable();
    (0..actions.len())
        .map(|i| match read.next_if(|(j, _)| *j == i) {
            Some((_, fact)) => Ok(fact),
            None => known
                .get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| format!("no fact of {}", actions[i].subject())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;
    use crate::host::action::{LocalContent, UnitSpec};

    /// The shipped files' script run by `sh` on a directory here (plain shell and coreutils):
    /// a recorded digest is trusted only while the file is as it was recorded.
    #[test]
    fn shipped_files_trust_their_recorded_digest_until_the_file_changes() -> R {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display().to_string();
        let shipped = |name: &str| {
            Action::local_file(
                &format!("{d}/{name}"),
                LocalContent {
                    path: "/nonexistent".into(),
                    sha256: "0".repeat(64),
                    size: 1,
                },
                0o755,
            )
        };
        let names = ["kept", "edited", "absent", "a-dir", "a-link", "unrecorded"];
        let actions: Vec<Action> = names.iter().map(|n| shipped(n)).collect();
        let sh = crate::host::sh;
        for (name, content) in [("kept", "a"), ("edited", "b"), ("unrecorded", "c")] {
            std::fs::write(format!("{d}/{name}"), content)?;
        }
        // recorded as the upload does, with a digest that is not the content's: only the
        // record can have said it
        sh(&record_digest(&format!("{d}/kept"), &"1".repeat(64)))?;
        sh(&record_digest(&format!("{d}/edited"), &"2".repeat(64)))?;
        std::fs::write(format!("{d}/edited"), "changed")?;
        std::fs::create_dir(format!("{d}/a-dir"))?;
        std::os::unix::fs::symlink("/bin/true", format!("{d}/a-link"))?;
        let facts = parse(&actions, &sh(&probe_script(&actions))?)?;
        let sha = |text: &str| crate::host::action::sha256_hex(text.as_bytes());
        let digest = |f: &Fact| match f {
            Fact::File { sha256, .. } => sha256.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(digest(&facts[0]), "1".repeat(64));
        assert_eq!(digest(&facts[1]), sha("changed"));
        assert_eq!(facts[2], Fact::Absent);
        assert_eq!(facts[3], Fact::OtherType("directory".into()));
        assert_eq!(facts[4], Fact::OtherType("link".into()));
        assert_eq!(digest(&facts[5]), sha("c"));
        Ok(())
    }

    /// The files', directories' and links' script run by `sh` on a directory here: one `find`
    /// and one `sha256sum` tell each path's type, mode, owner, target and digest, whatever
    /// stands where something else was wanted, and a path two actions name answers both.
    #[test]
    fn paths_are_read_with_one_find_and_one_sha256sum() -> R {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display().to_string();
        let at = |name: &str| format!("{d}/{name}");
        std::fs::write(at("file"), "a")?;
        std::fs::write(at("private file"), "b")?;
        std::fs::set_permissions(
            at("private file"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        std::fs::create_dir(at("dir"))?;
        std::fs::create_dir(at("dir-not-file"))?;
        std::os::unix::fs::symlink("/some where", at("link"))?;
        std::os::unix::fs::symlink(at("file"), at("link-not-file"))?;
        std::fs::write(at("file-not-link"), "c")?;
        let actions = vec![
            Action::file(&at("file"), "x", 0o644),
            Action::file(&at("private file"), "x", 0o644),
            Action::dir(&at("dir"), 0o755),
            Action::symlink(&at("link"), "/elsewhere"),
            Action::file(&at("absent"), "x", 0o644),
            Action::file(&at("dir-not-file"), "x", 0o644),
            Action::file(&at("link-not-file"), "x", 0o644),
            Action::symlink(&at("file-not-link"), "/x"),
            Action::dir(&at("file"), 0o755),
            // shipped files have a script of their own, in the same probe
            Action::local_file(
                &at("file"),
                LocalContent {
                    path: "/nonexistent".into(),
                    sha256: "0".repeat(64),
                    size: 1,
                },
                0o644,
            ),
        ];
        let facts = parse(&actions, &crate::host::sh(&probe_script(&actions))?)?;
        let sha = |text: &str| crate::host::action::sha256_hex(text.as_bytes());
        let me = {
            let o = std::process::Command::new("id").args(["-un"]).output()?;
            let g = std::process::Command::new("id").args(["-gn"]).output()?;
            format!(
                "{}:{}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&g.stdout).trim()
            )
        };
        let file = |content: &str, mode: u32| Fact::File {
            sha256: sha(content),
            mode,
            owner: me.clone(),
        };
        let dir_mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(at("dir"))?.permissions())
                & 0o7777;
        assert_eq!(facts[0], file("a", 0o644));
        assert_eq!(facts[1], file("b", 0o600));
        assert_eq!(
            facts[2],
            Fact::Dir {
                mode: dir_mode,
                owner: me.clone()
            }
        );
        assert_eq!(facts[3], Fact::Link("/some where".into()));
        assert_eq!(facts[4], Fact::Absent);
        assert_eq!(facts[5], Fact::OtherType("directory".into()));
        assert_eq!(facts[6], Fact::OtherType("link".into()));
        assert_eq!(facts[7], Fact::OtherType("regular file".into()));
        assert_eq!(facts[8], Fact::OtherType("regular file".into()));
        assert_eq!(facts[9], file("a", 0o644));
        // one process for the digests and one for the rest, however many paths
        let script = probe_script(&actions);
        assert_eq!(script.matches("sha256sum --").count(), 1, "{script}");
        assert_eq!(script.matches("find ").count(), 1, "{script}");
        Ok(())
    }

    #[test]
    fn facts_read_now_and_facts_known_from_a_probe_take_their_actions_places() -> R {
        let actions: Vec<Action> = ["/a", "/b", "/c"]
            .iter()
            .map(|p| Action::file(p, "x", 0o644))
            .collect();
        let link = Fact::OtherType("link".into());
        let known = [None, Some(link.clone()), None];
        let merged = merge(&actions, &known, [(0, Fact::Absent), (2, Fact::Done(true))])?;
        assert_eq!(merged, vec![Fact::Absent, link, Fact::Done(true)]);
        let short = merge(&actions, &known, [(0, Fact::Absent)]).unwrap_err();
        assert!(short.contains("/c"), "{short}");
        Ok(())
    }

    /// `unit_state` run by `sh` against a stand-in `systemctl` (this test has no systemd; the
    /// test bed runs the real one) that reports a real process: a copy of `sleep`, started
    /// before one input was written and then replaced on disk.
    #[test]
    fn unit_state_reads_one_systemctl_show_and_finds_later_inputs_and_a_replaced_binary() -> R {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display().to_string();
        let bin = format!("{d}/sleeper");
        std::fs::copy("/bin/sleep", &bin)?;
        let old = format!("{d}/old.conf");
        std::fs::write(&old, "x")?;
        let mut child = std::process::Command::new(&bin).arg("30").spawn()?;
        // the start time systemd would report: a second after the old input's mtime
        let started = std::fs::metadata(&old)?.modified()? + std::time::Duration::from_secs(1);
        let epoch = started.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let new = format!("{d}/new.conf");
        std::fs::write(&new, "y")?;
        let later = std::fs::File::options().write(true).open(&new)?;
        later.set_modified(started + std::time::Duration::from_secs(5))?;
        crate::host::stand_in(
            dir.path(),
            "systemctl",
            &format!(
                "#!/bin/sh\necho LoadState=loaded\necho UnitFileState=\necho ActiveState=active\necho NeedDaemonReload=${{RELOAD:-no}}\necho MainPID={}\necho ExecMainStartTimestamp=@{epoch}\necho 'ExecStart={{ path={bin} ; argv[]={bin} 30 ; ignore_errors=no }}'\n",
                child.id()
            ),
        )?;
        let state = |replace: bool, reload: &str| -> Result<String, Box<dyn std::error::Error>> {
            if replace {
                std::fs::remove_file(&bin)?;
                std::fs::copy("/bin/sleep", &bin)?;
            }
            let script = format!("{UNIT_STATE}unit_state x.service {old} {new} {d}/absent");
            crate::host::sh_with(&script, Some(dir.path()), &[("RELOAD", reload)])
        };
        let running = state(false, "no")?;
        let unit_file_newer = state(false, "yes")?;
        let replaced = state(true, "no")?;
        child.kill()?;
        child.wait()?;
        // an empty enablement still takes its place, so the fields after it keep theirs
        assert_eq!(running.trim_end(), format!("loaded - active - {new}"));
        assert_eq!(
            unit_file_newer.trim_end(),
            format!("loaded - active reload {new}")
        );
        assert_eq!(
            replaced.trim_end(),
            format!("loaded - active - {new} {bin} (deleted)")
        );
        Ok(())
    }

    #[test]
    fn a_unit_line_tells_its_states_the_inputs_written_since_it_started_and_a_stale_binary() -> R {
        let unit = Action::Unit(UnitSpec {
            name: "kube-proxy.service".into(),
            enabled: true,
            active: true,
            restart_when_changed: vec!["/etc/kubernetes/kube-proxy.conf".into()],
        });
        let script = probe_script(std::slice::from_ref(&unit));
        assert!(
            script.contains("$(unit_state 'kube-proxy.service' '/etc/kubernetes/kube-proxy.conf')"),
            "{script}"
        );
        let facts = parse(
            std::slice::from_ref(&unit),
            "0 unit loaded enabled active reload /etc/kubernetes/kube-proxy.conf,/etc/b /opt/x (deleted)\n",
        )?;
        assert_eq!(
            facts[0],
            Fact::Unit {
                exists: true,
                enabled: true,
                active: true,
                needs_reload: true,
                stale: Some("/opt/x (deleted)".into()),
                changed_since_start: vec![
                    "/etc/kubernetes/kube-proxy.conf".into(),
                    "/etc/b".into()
                ],
            }
        );
        let quiet = parse(
            std::slice::from_ref(&unit),
            "0 unit loaded enabled active - -\n",
        )?;
        assert_eq!(
            quiet[0],
            Fact::Unit {
                exists: true,
                enabled: true,
                active: true,
                needs_reload: false,
                stale: None,
                changed_since_start: Vec::new(),
            }
        );
        Ok(())
    }
}
