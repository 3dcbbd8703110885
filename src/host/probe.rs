//! What a phase must know of a host before it can say what the host should hold: declared as
//! probes, observed in one round trip per host and phase, then handed to the phase's pure
//! `desired`. What is read stays in memory (it may be key material).

use super::facts::{Fact, type_name};
use crate::cluster::Host;
use crate::ssh::{Session, SshError, shell_quote};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The host conditions that shape configuration (`Conditions`).
    Conditions,
    /// Whether a file exists and is not empty.
    NonEmpty(String),
    /// A file's content, when it exists, and what stands at its path (the executor's fact of
    /// that path when the phase writes it: no second round trip).
    File(String),
    /// The interface that holds the host's inventory address, and its MTU.
    Uplink,
}

/// What a host can and cannot do, where that changes the configuration (real hosts share some
/// limits of containers: read-only conntrack sysctls, no CAP_SYS_RESOURCE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions {
    /// A process may lower its oom_score_adj (runc sets -998 on pause containers).
    pub can_lower_oom_score: bool,
    /// nf_conntrack_max can be written (it is global, read-only outside the initial netns).
    pub conntrack_writable: bool,
    pub swap_on: bool,
    pub has_nft: bool,
    pub cgroup_v1: bool,
}

/// The answers to a phase's probes on one host.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    conditions: Option<Conditions>,
    non_empty: BTreeSet<String>,
    files: BTreeMap<String, Vec<u8>>,
    /// What stands at each File probe's path: its `find` type letter, mode and owner.
    stands: BTreeMap<String, (String, u32, String)>,
    uplink: Option<Result<(String, u32), String>>,
    asked: Vec<Probe>,
}

impl Observed {
    /// No answers yet to `probes` (filled by `parse`, or by a test through the setters).
    pub fn with(probes: &[Probe]) -> Observed {
        Observed {
            asked: probes.to_vec(),
            ..Observed::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn set_conditions(mut self, c: Conditions) -> Observed {
        self.conditions = Some(c);
        self
    }

    #[cfg(test)]
    pub(crate) fn set_file(mut self, path: &str, content: &[u8]) -> Observed {
        self.non_empty.insert(path.to_string());
        self.files.insert(path.to_string(), content.to_vec());
        self
    }

    #[cfg(test)]
    pub(crate) fn set_uplink(mut self, device: &str, mtu: u32) -> Observed {
        self.uplink = Some(Ok((device.to_string(), mtu)));
        self
    }

    fn asked(&self, p: &Probe) -> Result<(), String> {
        if self.asked.contains(p) {
            Ok(())
        } else {
            Err(format!("internal: {p:?} was not among the phase's probes"))
        }
    }

    pub fn conditions(&self) -> Result<Conditions, String> {
        self.asked(&Probe::Conditions)?;
        Ok(self.conditions.unwrap_or_default())
    }

    pub fn non_empty(&self, path: &str) -> Result<bool, String> {
        self.asked(&Probe::NonEmpty(path.to_string()))?;
        Ok(self.non_empty.contains(path))
    }

    pub fn file(&self, path: &str) -> Result<Option<&[u8]>, String> {
        self.asked(&Probe::File(path.to_string()))?;
        Ok(self.files.get(path).map(Vec::as_slice))
    }

    pub fn file_text(&self, path: &str) -> Result<Option<String>, String> {
        Ok(self
            .file(path)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// The executor's fact of a File probe's path, as the probe found it (None when the path
    /// was not probed, or the answer cannot say).
    pub fn fact(&self, path: &str) -> Option<Fact> {
        if !self.asked.contains(&Probe::File(path.to_string())) {
            return None;
        }
        let Some((kind, mode, owner)) = self.stands.get(path) else {
            return Some(Fact::Absent);
        };
        match kind.as_str() {
            "f" => self.files.get(path).map(|content| Fact::File {
                sha256: crate::host::action::sha256_hex(content),
                mode: *mode,
                owner: owner.clone(),
            }),
            other => Some(Fact::OtherType(type_name(other))),
        }
    }

    pub fn uplink(&self) -> Result<(String, u32), String> {
        self.asked(&Probe::Uplink)?;
        self.uplink
            .clone()
            .unwrap_or_else(|| Err("the uplink was not observed".into()))
    }
}

const CONDITIONS_SCRIPT: &str = r#"yes_no() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
echo "cond oom=$(yes_no sh -c 'echo -999 > /proc/self/oom_score_adj')"
echo "cond conntrack=$(yes_no sh -c 'cat /proc/sys/net/netfilter/nf_conntrack_max > /proc/sys/net/netfilter/nf_conntrack_max')"
echo "cond swap=$(yes_no test "$(wc -l < /proc/swaps)" -gt 1)"
echo "cond nft=$(yes_no command -v nft)"
echo "cond cgroup1=$(yes_no test "$(stat -fc %T /sys/fs/cgroup)" = tmpfs)"
"#;

/// The probe script: one line of answer per probe, prefixed with its kind and index.
fn script(host: &Host, probes: &[Probe]) -> String {
    let mut s = format!("# provision: {} probe(s)\n", probes.len());
    for (i, p) in probes.iter().enumerate() {
        match p {
            Probe::Conditions => s.push_str(CONDITIONS_SCRIPT),
            Probe::NonEmpty(path) => {
                s.push_str(&format!("[ -s {} ] && echo 'nonempty {i}'\n", shell_quote(path)))
            }
            Probe::File(path) => {
                let q = shell_quote(path);
                s.push_str(&format!(
                    "if [ -f {q} ]; then printf 'file {i} '; base64 -w0 < {q}; echo; fi\n"
                ))
            }
            Probe::Uplink => s.push_str(&format!(
                "dev=$(ip -o addr show | awk -v a={} '{{split($4,x,\"/\"); if (x[1]==a) print $2}}' | head -n1); if [ -n \"$dev\" ]; then echo \"uplink $dev $(cat /sys/class/net/$dev/mtu)\"; else echo 'uplink -'; fi\n",
                shell_quote(&host.address)
            )),
        }
    }
    s.push_str(&file_stands_script(probes));
    s.push_str("true\n");
    s
}

/// One `find` that tells what stands at every File probe's path: `stands <i> <type> <mode>
/// <owner>` (the type is find's letter; a link is not followed).
fn file_stands_script(probes: &[Probe]) -> String {
    let files: Vec<(usize, String)> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::File(path) => Some((i, shell_quote(path))),
            _ => None,
        })
        .collect();
    if files.is_empty() {
        return String::new();
    }
    let paths: Vec<&str> = files.iter().map(|(_, p)| p.as_str()).collect();
    let cases: Vec<String> = files
        .iter()
        .map(|(i, p)| format!("{p}) i={i} ;;"))
        .collect();
    format!(
        "find {} -maxdepth 0 -printf '%p|%y|%m|%u:%g\\n' 2>/dev/null | while IFS='|' read -r n t m o; do\n\
         \x20 case $n in {} *) continue ;; esac\n\
         \x20 echo \"stands $i $t $m $o\"\n\
         done\n",
        paths.join(" "),
        cases.join(" ")
    )
}

/// Reads the answers of `script`.
fn parse(host: &Host, probes: &[Probe], out: &str) -> Result<Observed, String> {
    let mut o = Observed::with(probes);
    let bad = || format!("unreadable probe answers from {}", host.name);
    let mut conditions = Conditions::default();
    for line in out.lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("cond"), Some(kv), None) => {
                let yes = kv.ends_with("=yes");
                match kv.split('=').next() {
                    Some("oom") => conditions.can_lower_oom_score = yes,
                    Some("conntrack") => conditions.conntrack_writable = yes,
                    Some("swap") => conditions.swap_on = yes,
                    Some("nft") => conditions.has_nft = yes,
                    Some("cgroup1") => conditions.cgroup_v1 = yes,
                    _ => {}
                }
            }
            (Some("nonempty"), Some(i), None) => {
                if let Some(Probe::NonEmpty(p)) =
                    i.parse::<usize>().ok().and_then(|i| probes.get(i))
                {
                    o.non_empty.insert(p.clone());
                }
            }
            (Some("file"), Some(i), data) => {
                let bytes = B64.decode(data.unwrap_or("").trim()).map_err(|_| bad())?;
                if let Some(Probe::File(p)) = i.parse::<usize>().ok().and_then(|i| probes.get(i)) {
                    if !bytes.is_empty() {
                        o.non_empty.insert(p.clone());
                    }
                    o.files.insert(p.clone(), bytes);
                }
            }
            (Some("stands"), Some(i), Some(rest)) => {
                if let Some(Probe::File(p)) = i.parse::<usize>().ok().and_then(|i| probes.get(i)) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let [kind, mode, owner] = f.as_slice() else {
                        return Err(bad());
                    };
                    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
                    o.stands
                        .insert(p.clone(), (kind.to_string(), mode, owner.to_string()));
                }
            }
            (Some("uplink"), Some("-"), None) => {
                o.uplink = Some(Err(format!(
                    "no interface of {} holds its inventory address {}: the overlay needs it as its local endpoint",
                    host.name, host.address
                )))
            }
            (Some("uplink"), Some(dev), Some(mtu)) => {
                o.uplink = Some(match mtu.trim().parse() {
                    Ok(mtu) => Ok((dev.to_string(), mtu)),
                    Err(_) => Err(format!(
                        "cannot read the MTU of {}'s interface {dev}",
                        host.name
                    )),
                })
            }
            _ => {}
        }
    }
    if probes.contains(&Probe::Conditions) {
        o.conditions = Some(conditions);
    }
    Ok(o)
}

/// Asks every probe of a phase on `host` in one round trip (none when there are no probes).
pub async fn observe(session: &Session, host: &Host, probes: &[Probe]) -> Result<Observed, String> {
    if probes.is_empty() {
        return Ok(Observed::default());
    }
    let out = session
        .run(&script(host, probes))
        .await
        .map_err(|e: SshError| e.to_string())?;
    parse(host, probes, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    fn host() -> Host {
        crate::cluster::from_text("apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: cp, address: 192.168.7.20, roles: [control-plane]}\n").hosts[0].clone()
    }

    #[test]
    fn answers_are_matched_to_their_probes() -> R {
        let h = host();
        let probes = vec![
            Probe::Conditions,
            Probe::NonEmpty("/a".into()),
            Probe::NonEmpty("/b".into()),
            Probe::File("/c".into()),
            Probe::File("/d".into()),
            Probe::Uplink,
        ];
        let out = format!(
            "cond oom=no\ncond conntrack=yes\ncond swap=no\ncond nft=yes\ncond cgroup1=yes\nnonempty 2\nfile 3 {}\nuplink eth0 1450\n",
            B64.encode("pem")
        );
        let o = parse(&h, &probes, &out)?;
        let c = o.conditions()?;
        assert!(!c.can_lower_oom_score && c.conntrack_writable && !c.swap_on);
        assert!(c.has_nft && c.cgroup_v1);
        assert_eq!(o.non_empty("/a"), Ok(false));
        assert_eq!(o.non_empty("/b"), Ok(true));
        assert_eq!(o.file_text("/c")?.as_deref(), Some("pem"));
        assert_eq!(o.file("/d"), Ok(None));
        assert_eq!(o.uplink(), Ok(("eth0".into(), 1450)));
        // a probe the phase did not declare is a mistake in the phase, not "absent"
        assert!(o.non_empty("/e").is_err());
        let none = parse(&h, &[Probe::Uplink], "uplink -\n")?;
        assert!(
            none.uplink().unwrap_err().contains("192.168.7.20"),
            "{none:?}"
        );
        Ok(())
    }

    /// A File probe's answer stands as the executor's fact of that path, so the two must
    /// agree: both scripts run by `sh` on a directory here, on each kind of thing at a path.
    #[test]
    fn a_file_probe_reads_the_same_fact_as_the_executor() -> R {
        use crate::host::{Action, facts};
        let dir = tempfile::tempdir()?;
        let at = |name: &str| format!("{}/{name}", dir.path().display());
        std::fs::write(at("file"), "a")?;
        std::fs::write(at("key"), "b")?;
        std::fs::set_permissions(
            at("key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        std::fs::create_dir(at("dir"))?;
        std::os::unix::fs::symlink(at("file"), at("link"))?;
        let names = ["file", "key", "dir", "link", "absent"];
        let probes: Vec<Probe> = names.iter().map(|n| Probe::File(at(n))).collect();
        let actions: Vec<Action> = names
            .iter()
            .map(|n| Action::file(&at(n), "x", 0o644))
            .collect();
        let sh = crate::host::sh;
        let observed = parse(&host(), &probes, &sh(&script(&host(), &probes))?)?;
        let read = facts::parse(&actions, &sh(&facts::probe_script(&actions))?)?;
        for (i, name) in names.iter().enumerate() {
            assert_eq!(observed.fact(&at(name)).as_ref(), Some(&read[i]), "{name}");
        }
        assert!(matches!(&read[1], facts::Fact::File { mode: 0o600, .. }));
        assert_eq!(read[4], facts::Fact::Absent);
        // a path not probed is not known
        assert_eq!(observed.fact(&at("other")), None);
        Ok(())
    }

    #[test]
    fn the_script_asks_each_probe_once() -> R {
        let s = script(&host(), &[Probe::File("/etc/x y".into()), Probe::Uplink]);
        assert!(
            s.contains("if [ -f '/etc/x y' ]; then printf 'file 0 '"),
            "{s}"
        );
        assert!(s.contains("-v a='192.168.7.20'"), "{s}");
        Ok(())
    }
}
