//! systemd as provision uses it: the unit file every component runs under (one template, a
//! typed context), and the shell loop that waits for a unit's health and, when it gives up,
//! shows the unit's state and the end of its journal.

use crate::render::render_typed;
use crate::ssh::Session;
use serde::Serialize;
use std::collections::BTreeMap;

/// A unit file of `component.service`.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    pub description: String,
    pub after: Vec<String>,
    pub wants: Vec<String>,
    pub env: Vec<String>,
    pub exec_start_pre: Vec<String>,
    pub exec: String,
    pub exec_start_post: Vec<String>,
    pub args: Vec<String>,
    /// `[Service]` settings (written sorted by key).
    pub service: BTreeMap<String, String>,
}

impl Unit {
    pub fn new(description: &str, exec: &str) -> Unit {
        Unit {
            description: description.into(),
            after: Vec::new(),
            wants: Vec::new(),
            env: Vec::new(),
            exec_start_pre: Vec::new(),
            exec: exec.into(),
            exec_start_post: Vec::new(),
            args: Vec::new(),
            service: BTreeMap::new(),
        }
    }

    /// Ordered after these units.
    pub fn after(mut self, units: &[&str]) -> Unit {
        self.after = units.iter().map(|u| u.to_string()).collect();
        self
    }

    /// Ordered after these units, and pulling them in.
    pub fn after_and_wants(mut self, units: &[&str]) -> Unit {
        self = self.after(units);
        self.wants = self.after.clone();
        self
    }

    pub fn exec_start_pre(mut self, commands: &[&str]) -> Unit {
        self.exec_start_pre = commands.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Starts only once `address` is on one of the host's interfaces (past IPv6 duplicate
    /// address detection), waiting up to a minute: what a unit that binds that address needs.
    /// `network-online.target` waits for every link instead, seconds on a fresh machine.
    pub fn once_address_is_up(mut self, address: &str) -> Unit {
        self.exec_start_pre.push(address_wait(address));
        self
    }

    /// Active (and so started, for the units ordered after it) only once `check` holds, or
    /// after `bound_s` seconds: a process that serves seconds after it starts, whose clients
    /// would otherwise start meanwhile, fail their first requests and back off. `check` runs
    /// every tenth of a second for two seconds, then every fifth; it is not fatal when it never
    /// holds, since the unit's health wait says why. The bound is the clock's, not a count of
    /// checks (a check that hangs until its own timeout would stretch a count), and the start
    /// timeout lies 30 s past it: a check that outlasts the start timeout would stop the unit.
    pub fn active_once(mut self, check: &str, bound_s: u32) -> Unit {
        let script = format!(
            "end=$(($(date +%s)+{bound_s})); i=0; until {check}; do [ $(date +%s) -ge $end ] && exit 1; if [ $i -lt 20 ]; then sleep 0.1; else sleep 0.2; fi; i=$((i+1)); done"
        );
        self.exec_start_post
            .push(format!("-/bin/sh -c '{}'", command_line(&script)));
        self.service
            .insert("TimeoutStartSec".into(), (bound_s + 30).to_string());
        self
    }

    pub fn args<S: ToString>(mut self, args: &[S]) -> Unit {
        self.args = args.iter().map(ToString::to_string).collect();
        self
    }

    pub fn service(mut self, settings: &[(&str, &str)]) -> Unit {
        self.service
            .extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub fn render(&self) -> Result<String, String> {
        #[derive(Serialize)]
        struct Rendered<'a> {
            #[serde(flatten)]
            unit: &'a Unit,
            /// systemd's default start limit (5 starts in 10 s) leaves a unit that exited
            /// quickly a few times failed for good, even once the cause is gone, until
            /// someone runs `systemctl reset-failed`: a unit restarted by itself never stops
            /// being restarted (the kubelet unit of Kubernetes' packages does the same).
            restarts_forever: bool,
        }
        let restarts_forever = self.service.get("Restart").is_some_and(|r| r != "no");
        render_typed(
            "component.service",
            &Rendered {
                unit: self,
                restarts_forever,
            },
        )
    }
}

/// The `ExecStartPre=` of [`Unit::once_address_is_up`].
fn address_wait(address: &str) -> String {
    let script = format!(
        "i=0; until [ -n \"$(ip -o addr show to {address} -tentative)\" ]; do i=$((i+1)); if [ $i -ge 600 ]; then echo \"{address} is on no interface of this host after 60 s\" >&2; exit 1; fi; sleep 0.1; done"
    );
    format!("/bin/sh -c '{}'", command_line(&script))
}

/// `script` as a unit's command line keeps it: systemd expands `$NAME` (environment) and `%x`
/// (specifiers: `%s` is the user's shell) in command lines before the shell sees them.
fn command_line(script: &str) -> String {
    script.replace('$', "$$").replace('%', "%%")
}

/// `systemctl stop UNITS`, tried once more when systemd cancels the stop job for a start that
/// was already queued (a unit restarting itself, Restart=always): the second stop sticks.
pub fn stop(units: &str) -> String {
    format!("systemctl stop {units} || {{ sleep 1; systemctl stop {units}; }}")
}

/// A shell loop that exits 0 once `check` holds, 1 when it has not within `attempts` ×
/// `interval_s` seconds. It checks every tenth of a second for the first two seconds (most
/// units are up by then, and a wait of `interval_s` too many cost up to that much per phase),
/// then every `interval_s`.
pub fn wait_for(check: &str, attempts: u32, interval_s: f32) -> String {
    let tenths = |s: f32| (s * 10.0).round().max(1.0) as u32;
    let (budget, step) = (tenths(attempts as f32 * interval_s), tenths(interval_s));
    format!(
        "t=0; until {check}; do [ $t -ge {budget} ] && exit 1; \
         if [ $t -lt 20 ]; then sleep 0.1; t=$((t+1)); else sleep {interval_s}; t=$((t+{step})); fi; done"
    )
}

/// Whether `unit` is active, then the last `lines` of its journal (for an error message).
pub async fn state_and_journal(session: &Session, unit: &str, lines: u32) -> String {
    session
        .exec(
            &format!(
                "echo \"{unit}: $(systemctl is-active {unit})\"; journalctl -u {unit} --no-pager -n {lines} -o cat"
            ),
            None,
        )
        .await
        .map(|o| o.stdout_text())
        .unwrap_or_default()
}

/// Runs `wait` (a `wait_for` loop) on the host; when it fails, what it wrote to stderr, the
/// output of `diagnose` (a command that says what is wrong), the unit's state and journal.
pub async fn wait_or_journal(
    session: &Session,
    wait: &str,
    diagnose: Option<&str>,
    unit: &str,
    lines: u32,
) -> Result<(), String> {
    let out = session.exec(wait, None).await.map_err(|e| e.to_string())?;
    if out.status == 0 {
        return Ok(());
    }
    let mut why = out.stderr_text().trim().to_string();
    if !why.is_empty() {
        why.push('\n');
    }
    if let Some(cmd) = diagnose
        && let Ok(o) = session.exec(&format!("{cmd} 2>&1"), None).await
    {
        why.push_str(&o.stdout_text());
    }
    why.push_str(&state_and_journal(session, unit, lines).await);
    Err(why)
}

/// Waits until `check` holds on the host (`attempts` tries half a second apart); otherwise an
/// error: `unit` "is not {state}" on `host`, its output, state and journal, then `hint`.
pub async fn until_ready(
    session: &Session,
    host: &str,
    check: &str,
    attempts: u32,
    unit: &str,
    state: &str,
    hint: &str,
) -> Result<(), String> {
    wait_or_journal(session, &wait_for(check, attempts, 0.5), None, unit, 15)
        .await
        .map_err(|journal| format!("{unit} is not {state} on {host}:\n{journal}{hint}"))
}

/// Restarts that tell a unit that cannot run (it exits as it starts, and `Restart=always` starts
/// it again every 2 s) from one still starting: a wait gives up on it after seconds, not minutes.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// How often a wait asks systemd how many times the unit restarted.
const CRASH_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Watches, during a wait, how many times systemd restarted `unit` (`NRestarts`) since the
/// watch first looked.
pub struct CrashWatch<'a> {
    session: &'a Session,
    host: &'a str,
    unit: &'a str,
    first: Option<(u32, std::time::Instant)>,
    checked: Option<std::time::Instant>,
}

impl<'a> CrashWatch<'a> {
    pub fn new(session: &'a Session, host: &'a str, unit: &'a str) -> CrashWatch<'a> {
        CrashWatch {
            session,
            host,
            unit,
            first: None,
            checked: None,
        }
    }

    /// Every `CRASH_CHECK_EVERY` at most (the first call counts where it starts from): an error
    /// with the unit's last errors once it restarted `CRASH_LOOP_RESTARTS` times since.
    pub async fn check(&mut self) -> Result<(), String> {
        if self
            .checked
            .is_some_and(|t| t.elapsed() < CRASH_CHECK_EVERY)
        {
            return Ok(());
        }
        self.checked = Some(std::time::Instant::now());
        let Some((now, state)) = restarts(self.session, self.unit).await else {
            return Ok(());
        };
        if state == "failed" {
            let errors = last_errors(self.session, self.unit, 3).await;
            return Err(format!(
                "{unit} on {host} failed, and systemd does not start it again\n{unit}'s last errors:\n{errors}fix what they name (`journalctl -u {unit}` on {host}), then run the same command again",
                unit = self.unit,
                host = self.host,
            ));
        }
        let Some((first, since)) = self.first else {
            self.first = Some((now, std::time::Instant::now()));
            return Ok(());
        };
        if now < first + CRASH_LOOP_RESTARTS {
            return Ok(());
        }
        let errors = last_errors(self.session, self.unit, 3).await;
        Err(format!(
            "{unit} on {host} exited {n} times in {s} s, each time started again by systemd: it cannot run as configured\n{unit}'s last errors:\n{errors}fix what they name (`journalctl -u {unit}` on {host}), then run the same command again",
            unit = self.unit,
            host = self.host,
            n = now - first,
            s = since.elapsed().as_secs(),
        ))
    }
}

/// How many times systemd restarted `unit` by its `Restart=` setting, and its state.
async fn restarts(session: &Session, unit: &str) -> Option<(u32, String)> {
    let out = session
        .exec(
            &format!("systemctl show -p NRestarts -p ActiveState {unit}"),
            None,
        )
        .await
        .ok()?;
    let text = out.stdout_text();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    Some((
        value("NRestarts")?.parse().ok()?,
        value("ActiveState")?.into(),
    ))
}

/// The last `n` distinct error lines of `unit`'s journal (klog's `E` lines without their time
/// and source, a command line's `Error:`), indented; "(none in its journal)" when there are none.
async fn last_errors(session: &Session, unit: &str, n: u32) -> String {
    let errors = session
        .exec(
            &format!(
                "journalctl -u {unit} --no-pager -n 400 -o cat | grep -E '^(Error: |E[0-9]{{4}} )|command failed' \
                 | sed -E 's/^E[0-9]{{4}} [0-9:.]+ +[0-9]+ [^]]*\\] //' | awk '!seen[$0]++' | tail -n {n}"
            ),
            None,
        )
        .await
        .map(|o| o.stdout_text())
        .unwrap_or_default();
    if errors.trim().is_empty() {
        return "    (none in its journal)\n".into();
    }
    errors.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a `wait_for` loop whose check counts its calls in a file; the exit status and how
    /// many times it checked.
    fn waited(
        holds_at: u32,
        attempts: u32,
        interval_s: f32,
    ) -> Result<(bool, u32), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let n = dir.path().join("n");
        let n = n.display();
        let check = format!(
            "{{ c=$(($(cat {n} 2>/dev/null || echo 0)+1)); echo $c > {n}; [ $c -ge {holds_at} ]; }}"
        );
        let ok = std::process::Command::new("sh")
            .args(["-c", &wait_for(&check, attempts, interval_s)])
            .status()?
            .success();
        let calls = std::fs::read_to_string(dir.path().join("n"))?;
        Ok((ok, calls.trim().parse()?))
    }

    #[test]
    fn a_wait_checks_often_at_first_and_gives_up_after_its_time()
    -> Result<(), Box<dyn std::error::Error>> {
        // a check that holds at its 4th call is found within the first half second
        assert_eq!(waited(4, 10, 0.5)?, (true, 4));
        // 0.3 s in all: three tenths, and a check after each
        assert_eq!(waited(100, 3, 0.1)?, (false, 4));
        // 2.5 s: twenty checks a tenth apart, then one more after 0.5 s
        assert_eq!(waited(100, 5, 0.5)?, (false, 22));
        Ok(())
    }

    #[test]
    fn a_unit_renders_its_ordering_command_and_settings() -> Result<(), Box<dyn std::error::Error>>
    {
        let text = Unit::new("etcd: the store", "/usr/local/bin/etcd")
            .after_and_wants(&["network-online.target"])
            .args(&["--name=a", "--data-dir=/var/lib/etcd"])
            .service(&[("Type", "notify"), ("Restart", "always")])
            .render()?;
        assert!(text.contains("Description=etcd: the store\n"), "{text}");
        assert!(
            text.contains("After=network-online.target\nWants=network-online.target\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "ExecStart=/usr/local/bin/etcd \\\n  --name=a \\\n  --data-dir=/var/lib/etcd\n"
            ),
            "{text}"
        );
        // settings sorted by key, so a unit file only changes when a setting does
        assert!(text.contains("Restart=always\nType=notify\n"), "{text}");
        assert!(text.contains("WantedBy=multi-user.target"), "{text}");
        // restarted by systemd without end: no start limit, in the [Unit] section
        let unit_section = text.split("[Service]").next().unwrap_or_default();
        assert!(unit_section.contains("StartLimitIntervalSec=0\n"), "{text}");
        let once = Unit::new("once", "/bin/true").render()?;
        assert!(!once.contains("StartLimitIntervalSec"), "{once}");
        Ok(())
    }

    /// A command line as systemd hands it to the program: `$$` and `%%` unescaped; a `%`
    /// specifier or `$` variable systemd would expand is an error here.
    fn as_systemd_runs(line: &str) -> Result<String, String> {
        let (mut out, mut chars) = (String::new(), line.chars().peekable());
        while let Some(c) = chars.next() {
            if (c == '$' || c == '%') && chars.next_if_eq(&c).is_none() {
                return Err(format!("systemd would expand {c} in {line}"));
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The start-post line systemd runs (unescaped as systemd does): it returns once the check holds; one
    /// that never holds ends it after the bound, which the `-` prefix makes no failure of the
    /// unit, and the start timeout lies past that bound.
    #[test]
    fn a_unit_is_active_once_its_check_holds_or_after_its_bound() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let n = dir.path().join("n");
        let n = n.display();
        let check = format!(
            "{{ c=$(($(cat {n} 2>/dev/null || echo 0)+1)); echo $c > {n}; [ $c -ge 3 ]; }}"
        );
        let text = Unit::new("api", "/usr/local/bin/api")
            .active_once(&check, 2)
            .service(&[("Restart", "always")])
            .render()?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStartPost=-/bin/sh -c '"))
            .and_then(|l| l.strip_suffix('\''))
            .ok_or(format!("no ExecStartPost in {text}"))?;
        let line = as_systemd_runs(line)?;
        assert!(
            text.contains("Restart=always\nTimeoutStartSec=32\n"),
            "{text}"
        );
        let run = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .status()
                .map_err(|e| e.to_string())
        };
        assert!(run(&line)?.success(), "{line}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("n")).ok(),
            Some("3\n".into())
        );
        // a check that never holds: given up after 2 s of the clock (whole seconds: 1 to 2 s)
        let started = std::time::Instant::now();
        assert!(!run(&line.replace("-ge 3", "-ge 1000"))?.success());
        let waited = started.elapsed().as_secs_f32();
        assert!((1.0..3.0).contains(&waited), "gave up after {waited} s");
        Ok(())
    }

    /// The line systemd runs (unescaped as systemd does), then the shell.
    #[test]
    fn a_unit_waits_for_its_address_and_only_for_it() -> Result<(), String> {
        let text = Unit::new("etcd", "/usr/local/bin/etcd")
            .once_address_is_up("127.0.0.1")
            .render()?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStartPre=/bin/sh -c '"))
            .and_then(|l| l.strip_suffix('\''))
            .ok_or(format!("no ExecStartPre in {text}"))?;
        let line = as_systemd_runs(line)?;
        let run = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .output()
                .map_err(|e| e.to_string())
        };
        assert!(run(&line)?.status.success(), "{line}");
        // an address on no interface: a clear failure (after 60 s; the test waits 0.3 s)
        let absent = line
            .replace("127.0.0.1", "192.0.2.77")
            .replace("-ge 600", "-ge 3");
        let out = run(&absent)?;
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "192.0.2.77 is on no interface of this host after 60 s"
        );
        Ok(())
    }
}
