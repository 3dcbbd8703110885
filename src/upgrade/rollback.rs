//! Putting a host back on the versions it ran before an upgrade that failed on it: each
//! component's files of the old version are still in place, so a rollback is a symlink switch
//! and a restart of the units that then run another binary.

use super::plan::Step;
use crate::bundle::HOST_ROOT;
use crate::cluster::Host;
use crate::run::Ctx;
use crate::ssh::shell_quote;

/// The shell that points every link into a component's new version back at its old one, then
/// restarts each unit whose main process no longer runs its ExecStart's file.
pub fn script(steps: &[&Step]) -> String {
    // no `set -e`: a link left as it was must not stop the restarts below
    let mut s = crate::host::facts::UNIT_STATE.to_string();
    s.push_str(
        "relink() { for l in /usr/local/bin/* /opt/cni/bin/*; do [ -L \"$l\" ] || continue; t=$(readlink \"$l\"); case $t in \"$1\"/*) o=\"$2/${t#\"$1\"/}\"; [ -e \"$o\" ] && ln -sfn \"$o\" \"$l\" && echo \"$l -> $o\";; esac; done; }\n",
    );
    for st in steps {
        if st.from == "-" || st.from == st.to {
            continue;
        }
        let dir = |v: &str| shell_quote(&format!("{HOST_ROOT}/{}/{v}", st.component));
        s.push_str(&format!("relink {} {}\n", dir(&st.to), dir(&st.from)));
    }
    s.push_str("for u in");
    // each compared component runs as a unit of its name
    for u in super::COMPARED {
        s.push_str(&format!(" {u}"));
    }
    // a unit that runs its binary stays; one that runs a stale one, or failed on the new
    // version, (re)starts (`unit_state`: the executor's own test; its third field is the
    // activity, its sixth the stale binary)
    s.push_str(
        "; do systemctl is-enabled -q $u 2>/dev/null || continue; \
         set -- $(unit_state $u); [ \"$3\" = active ] && [ -z \"$6\" ] && continue; \
         systemctl restart $u && echo \"restarted $u\"; done\n",
    );
    s
}

/// Rolls `host` back over SSH: the lines it printed (links switched, units restarted).
pub async fn run(ctx: &Ctx, host: &Host, steps: &[&Step]) -> Result<Vec<String>, String> {
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let out = session
        .run(&script(steps))
        .await
        .map_err(|e| format!("rolling {} back: {e}", host.name))?;
    Ok(out.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(component: &str, from: &str, to: &str) -> Step {
        Step {
            order: 1,
            stage: "control-plane".into(),
            host: "n1".into(),
            component: component.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn links_go_back_to_the_old_version_and_new_components_stay() {
        let api = step("kube-apiserver", "1.36.4", "1.37.2");
        let fresh = step("kube-router", "-", "2.1.0");
        let s = script(&[&api, &fresh]);
        assert!(
            s.contains(
                "relink '/opt/provision/kube-apiserver/1.37.2' '/opt/provision/kube-apiserver/1.36.4'"
            ),
            "{s}"
        );
        assert!(!s.contains("kube-router/2.1.0"), "{s}");
        assert!(s.contains("systemctl restart $u"), "{s}");
        // the executor's own stale-binary test, and nothing that stops the script half-way
        assert!(s.contains("unit_state() {") && !s.contains("set -e"), "{s}");
    }

    /// The restart loop run by `sh` against a stand-in `systemctl` (no systemd here; the
    /// upgrade tests run the real one) whose units all run this test's own process: one
    /// unit's ExecStart names another file, so only that one is stale and restarts.
    #[test]
    fn only_a_unit_running_another_binary_than_its_exec_start_restarts()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let me = std::env::current_exe()?.display().to_string();
        crate::host::stand_in(
            dir.path(),
            "systemctl",
            &format!(
                "#!/bin/sh\ncase $1 in\n  is-enabled) exit 0 ;;\n  restart) exit 0 ;;\nesac\n\
                 for u; do :; done\npath={me}; [ \"$u\" = kubelet ] && path=/bin/true\n\
                 printf 'LoadState=loaded\\nActiveState=active\\nMainPID=%s\\nExecStart={{ path=%s ; argv[]=x }}\\n' {} \"$path\"\n",
                std::process::id()
            ),
        )?;
        let out = crate::host::sh_with(&script(&[]), Some(dir.path()), &[])?;
        assert_eq!(out, "restarted kubelet\n");
        Ok(())
    }
}
