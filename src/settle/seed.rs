//! Which control plane a run reads the cluster's material from (the CAs, the service-account
//! key, the Secrets key, admin.conf) and joins the others through: the seed. No control plane is
//! special for good: the seed is chosen at the start of every run among the control planes that
//! stay, preferring one that has the cluster and serves it, so the inventory's first can leave
//! (`reset --hosts`) or be down while the others carry on.

use crate::cluster::Host;
use crate::paths;
use crate::run::Ctx;

/// What a control plane showed when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub reachable: bool,
    /// It holds the cluster's CA certificate.
    pub has_cluster: bool,
    pub etcd_active: bool,
    pub apiserver_active: bool,
}

impl Seen {
    /// Higher is better: serving the cluster, then holding it, then nothing.
    fn rank(&self) -> u8 {
        match (self.has_cluster, self.etcd_active && self.apiserver_active) {
            (true, true) => 2,
            (true, false) => 1,
            (false, _) => 0,
        }
    }
}

/// The seed among `candidates` (inventory order) given what each showed: the first of the best
/// rank; when none has the cluster yet, the inventory's first (a new cluster starts there, and
/// an unreachable one fails the run with its own error).
pub fn pick<'a>(candidates: &[(&'a Host, Seen)]) -> Option<&'a Host> {
    let best = candidates
        .iter()
        .filter(|(_, s)| s.reachable)
        .map(|(_, s)| s.rank())
        .max()
        .unwrap_or(0);
    if best == 0 {
        return candidates.first().map(|(h, _)| *h);
    }
    candidates
        .iter()
        .find(|(_, s)| s.reachable && s.rank() == best)
        .map(|(h, _)| *h)
}

const PROBE: &str = "test -s {ca} && echo cluster; \
                     systemctl is-active --quiet etcd && echo etcd; \
                     systemctl is-active --quiet kube-apiserver && echo apiserver; true";

/// Asks every control plane that stays (in parallel) and records the seed in the run's cluster.
/// With one candidate there is nothing to ask.
pub async fn choose(ctx: &mut Ctx, leaving: &[String]) {
    let candidates: Vec<Host> = ctx
        .cluster
        .control_planes()
        .filter(|h| !leaving.contains(&h.name))
        .cloned()
        .collect();
    let seed = if candidates.len() <= 1 {
        candidates.first().map(|h| h.name.clone())
    } else {
        let probe = PROBE.replace("{ca}", &paths::pki("ca", "crt"));
        let seen = futures::future::join_all(candidates.iter().map(|h| {
            let (ctx, probe) = (&*ctx, &probe);
            async move {
                let Ok(session) = ctx.session(h).await else {
                    return Seen::default();
                };
                match session.run(probe).await {
                    Ok(out) => Seen {
                        reachable: true,
                        has_cluster: out.lines().any(|l| l == "cluster"),
                        etcd_active: out.lines().any(|l| l == "etcd"),
                        apiserver_active: out.lines().any(|l| l == "apiserver"),
                    },
                    Err(_) => Seen::default(),
                }
            }
        }))
        .await;
        let pairs: Vec<(&Host, Seen)> = candidates.iter().zip(seen).collect();
        pick(&pairs).map(|h| h.name.clone())
    };
    ctx.set_seed(seed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> crate::cluster::Cluster {
        crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata:\n  name: t\nspec:\n  controlPlaneEndpoint:\n    vip: 10.0.0.100\n  hosts:\n    - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n    - {name: cp2, address: 10.0.0.2, roles: [control-plane]}\n    - {name: cp3, address: 10.0.0.3, roles: [control-plane]}\n",
        )
    }

    const SERVING: Seen = Seen {
        reachable: true,
        has_cluster: true,
        etcd_active: true,
        apiserver_active: true,
    };
    const BARE: Seen = Seen {
        reachable: true,
        has_cluster: false,
        etcd_active: false,
        apiserver_active: false,
    };

    fn seed_of(seen: [Seen; 3]) -> String {
        let c = cluster();
        let pairs: Vec<(&Host, Seen)> = c.hosts.iter().zip(seen).collect();
        pick(&pairs).map(|h| h.name.clone()).unwrap_or_default()
    }

    #[test]
    fn a_new_cluster_starts_on_the_inventorys_first_control_plane() {
        assert_eq!(seed_of([BARE, BARE, BARE]), "cp1");
        // even when it does not answer: the run then fails naming it
        assert_eq!(seed_of([Seen::default(), BARE, BARE]), "cp1");
    }

    #[test]
    fn the_first_control_plane_that_serves_the_cluster_is_the_seed() {
        assert_eq!(seed_of([SERVING, SERVING, SERVING]), "cp1");
        // the first was reset (its files are gone) or lost its power
        assert_eq!(seed_of([BARE, SERVING, SERVING]), "cp2");
        assert_eq!(seed_of([Seen::default(), SERVING, SERVING]), "cp2");
        // one that holds the cluster but whose etcd or API server is down comes after one
        // that serves it
        let stopped = Seen {
            etcd_active: false,
            ..SERVING
        };
        assert_eq!(seed_of([stopped, BARE, SERVING]), "cp3");
        // and before one that has nothing
        assert_eq!(seed_of([BARE, stopped, BARE]), "cp2");
    }

    #[test]
    fn the_cluster_names_the_seed_it_was_given_else_its_first_control_plane() {
        let mut c = cluster();
        assert_eq!(c.seed_control_plane().map(|h| h.name.as_str()), Some("cp1"));
        c.seed = Some("cp3".into());
        assert_eq!(c.seed_control_plane().map(|h| h.name.as_str()), Some("cp3"));
        assert!(c.is_seed_control_plane(&c.hosts[2]));
        assert!(!c.is_seed_control_plane(&c.hosts[0]));
    }
}
