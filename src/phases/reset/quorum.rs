//! Before control planes leave a cluster that stays: etcd must keep its quorum without them.
//! Counted from the members and their health as a staying control plane's etcd reports them.

use super::*;

/// Refuses, before anything is drained, a reset that would leave etcd without a healthy
/// majority.
pub(super) struct EtcdQuorum {
    pub(super) cluster_stays: bool,
}

/// One etcd member as `member list` and `endpoint health` show it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub name: String,
    pub healthy: bool,
}

/// Members from `member list` (`id, started, name, peer, client, learner`) and health lines
/// (`URL is healthy: ...`, `URL is unhealthy: ...`), joined by client URL.
pub(super) fn members(list: &str, health: &str) -> Vec<Member> {
    list.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (f.len() >= 5).then(|| Member {
                name: f[2].to_string(),
                healthy: health
                    .lines()
                    .any(|h| h.starts_with(&format!("{} is healthy", f[4]))),
            })
        })
        .collect()
}

/// Why taking `leaving` away would cost etcd its quorum, or None when it is safe.
pub(super) fn refusal(members: &[Member], leaving: &[&str]) -> Option<String> {
    let stay: Vec<&Member> = members
        .iter()
        .filter(|m| !leaving.contains(&m.name.as_str()))
        .collect();
    let healthy_now = members.iter().filter(|m| m.healthy).count();
    let healthy_after = stay.iter().filter(|m| m.healthy).count();
    let needed = stay.len() / 2 + 1;
    if stay.is_empty() || healthy_after >= needed {
        return None;
    }
    let down: Vec<&str> = members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.as_str())
        .collect();
    Some(format!(
        "etcd would lose its quorum: {} members, {healthy_now} healthy{}; without {} the {} left \
         would have {healthy_after} healthy where etcd needs {needed}. Bring the unhealthy \
         members back first (or take them out: reset --hosts with their names), or reset the \
         whole cluster",
        members.len(),
        if down.is_empty() {
            String::new()
        } else {
            format!(" ({} not answering)", down.join(", "))
        },
        leaving.join(", "),
        stay.len(),
    ))
}

#[async_trait::async_trait]
impl Step for EtcdQuorum {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, host: &Host) -> bool {
        self.cluster_stays && host.control_plane
    }

    async fn prepare(&self, ctx: &Ctx, leaving: &[(&Host, &Observed)]) -> Result<(), String> {
        let names: Vec<&str> = leaving.iter().map(|(h, _)| h.name.as_str()).collect();
        // the first staying control plane that answers: one of them may be the one down
        let mut unreachable = Vec::new();
        let mut found = None;
        for h in ctx
            .cluster
            .control_planes()
            .filter(|h| !names.contains(&h.name.as_str()))
        {
            match ctx.session(h).await {
                Ok(s) => {
                    found = Some((h, s));
                    break;
                }
                Err(e) => unreachable.push(format!("{}: {e}", h.name)),
            }
        }
        let Some((staying, session)) = found else {
            if unreachable.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "no staying control plane answers, so etcd's quorum cannot be checked ({})",
                unreachable.join("; ")
            ));
        };
        let at = etcd::url(&staying.address, 2379);
        let list = session
            .exec(&etcd::etcdctl_at(&at, "member list"), None)
            .await
            .map_err(|e| e.to_string())?;
        if list.status != 0 {
            return Err(format!(
                "etcd on {} does not list its members, so its quorum cannot be checked: {}",
                staying.name,
                list.stderr_text().trim()
            ));
        }
        // exits 1 when a member is unhealthy: the lines say which
        let health = session
            .exec(
                &format!(
                    "{} 2>&1",
                    etcd::etcdctl_at(&at, "endpoint health --cluster")
                ),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        match refusal(&members(&list.stdout_text(), &health.stdout_text()), &names) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "8e9e05c52164694d, started, cp1, https://10.0.0.11:2380, https://10.0.0.11:2379, false\n\
                        91bc3c398fb3c146, started, cp2, https://10.0.0.12:2380, https://10.0.0.12:2379, false\n\
                        fd422379fda50e48, started, cp3, https://10.0.0.13:2380, https://10.0.0.13:2379, false\n";

    #[test]
    fn a_second_control_plane_gone_of_three_is_refused_with_the_count() {
        let health = "https://10.0.0.11:2379 is healthy: successfully committed proposal: took = 2ms\n\
                      https://10.0.0.12:2379 is healthy: successfully committed proposal: took = 3ms\n\
                      https://10.0.0.13:2379 is unhealthy: failed to commit proposal: context deadline exceeded\n";
        let m = members(LIST, health);
        assert_eq!(m.iter().filter(|m| m.healthy).count(), 2);
        let why = refusal(&m, &["cp2"]).unwrap_or_default();
        assert!(
            why.starts_with("etcd would lose its quorum: 3 members, 2 healthy (cp3 not answering); without cp2 the 2 left would have 1 healthy where etcd needs 2"),
            "{why}"
        );
        // the dead one itself may go: the two healthy keep the quorum
        assert_eq!(refusal(&m, &["cp3"]), None);
    }

    #[test]
    fn healthy_members_may_leave_down_to_one() {
        let health = "https://10.0.0.11:2379 is healthy: x\nhttps://10.0.0.12:2379 is healthy: x\nhttps://10.0.0.13:2379 is healthy: x\n";
        let m = members(LIST, health);
        assert_eq!(refusal(&m, &["cp3"]), None);
        assert_eq!(refusal(&m, &["cp2", "cp3"]), None);
    }
}
