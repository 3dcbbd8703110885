//! The `etcd` phase: one member per control plane, mutual TLS for peers and clients, data
//! directory 0700, health checked with the healthcheck-client certificate.

use super::step::{self, Applied, Desired, Step};
use super::{Phase, Work};
use crate::cluster::{Cluster, Host};
use crate::host::probe::Observed;
use crate::host::{Action, UnitSpec};
use crate::run::Ctx;
use crate::systemd::{self, Unit};

pub const UNIT: &str = "/etc/systemd/system/etcd.service";
pub const DATA_DIR: &str = "/var/lib/etcd";
pub use crate::paths::ETCD_HEALTHCHECK_KEY as HEALTHCHECK_KEY;
use crate::paths::ETCD_PKI_DIR as PKI;

pub fn phase() -> Phase {
    Phase {
        name: "etcd",
        summary: "etcd on the control planes, peer and client mTLS, health checked",
        work: Work::Step(Box::new(Etcd)),
        children: Vec::new(),
    }
}

pub(crate) struct Etcd;

pub fn url(address: &str, port: u16) -> String {
    crate::cluster::https_url(address, port)
}

/// etcdctl with the healthcheck client's credentials, against the local member.
pub fn etcdctl(command: &str) -> String {
    etcdctl_at("https://127.0.0.1:2379", command)
}

/// etcdctl with the healthcheck client's credentials, against the member at `endpoint`.
pub fn etcdctl_at(endpoint: &str, command: &str) -> String {
    format!(
        "ETCDCTL_API=3 etcdctl --endpoints={endpoint} --cacert={PKI}/ca.crt --cert={PKI}/healthcheck-client.crt --key={PKI}/healthcheck-client.key --command-timeout=5s {command}"
    )
}

/// `ETCD_INITIAL_CLUSTER` and `ETCD_INITIAL_CLUSTER_STATE` for a member's first start.
pub const INITIAL_CLUSTER_ENV: &str = "/etc/kubernetes/etcd-initial-cluster.env";

/// The seed's first start: a new cluster of one. Nothing to do once the member has data.
fn start_cluster(host: &Host, peer: &str) -> Action {
    let env = format!(
        "ETCD_INITIAL_CLUSTER={}={peer}\nETCD_INITIAL_CLUSTER_STATE=new\n",
        host.name
    );
    Action::Exec {
        label: format!("start a new etcd cluster on {}", host.name),
        cmd: format!("umask 022; printf '{env}' > {INITIAL_CLUSTER_ENV}"),
        unless: format!(
            "[ -d {DATA_DIR}/member ] || printf '{env}' | cmp -s - {INITIAL_CLUSTER_ENV}"
        ),
    }
}

/// A new member joins the running cluster through the seed's etcd: added (unless it is
/// already, from an interrupted run), then its first start is given the membership as the
/// cluster now has it. Nothing to do once the member has data.
fn join_cluster(seed_address: &str, host: &Host, peer: &str) -> Action {
    let remote = |cmd: &str| etcdctl_at(&url(seed_address, 2379), cmd);
    // serializable: from the moment a second member is added until it starts, the cluster has
    // no quorum (two members, one up), and a linearizable read would wait for one
    let list = remote("member list --consistency=s");
    let listed = format!(
        "{list} | grep -qF {}",
        crate::ssh::shell_quote(&format!(", {peer},"))
    );
    // the leader refuses a new voting member until every member has been connected for 5 s
    // ("unhealthy cluster"): the member added just before may be that new
    let add = format!(
        "ok=1; for i in $(seq 1 30); do out=$({} 2>&1) && {{ ok=0; break; }}; \
         case \"$out\" in *'unhealthy cluster'*) sleep 1;; *) break;; esac; done; \
         [ $ok = 0 ] || {{ printf '%s\\n' \"$out\" >&2; false; }}",
        remote(&format!("member add {} --peer-urls={peer}", host.name))
    );
    // `member list`: ID, status, name, peer URLs, client URLs, learner. A member not started
    // yet has no name: this one is named, another by its ID (names are not compared, the
    // peer URLs are)
    let membership = format!(
        "list=$({list}) && printf '%s\\n' \"$list\" | awk -F', ' -v me={name} -v peer={peer} \
         'BEGIN {{ printf \"ETCD_INITIAL_CLUSTER=\" }} \
          {{ n = $3; if ($4 == peer) n = me; else if (n == \"\") n = $1; printf \"%s%s=%s\", sep, n, $4; sep = \",\" }} \
          END {{ print \"\"; print \"ETCD_INITIAL_CLUSTER_STATE=existing\" }}' > {INITIAL_CLUSTER_ENV}.tmp && \
         mv {INITIAL_CLUSTER_ENV}.tmp {INITIAL_CLUSTER_ENV}",
        name = crate::ssh::shell_quote(&host.name),
        peer = crate::ssh::shell_quote(peer),
    );
    Action::Exec {
        label: format!("add etcd member {}", host.name),
        cmd: format!("umask 022; {{ {listed} || {{ {add}; }}; }} && {membership}"),
        unless: format!(
            "[ -d {DATA_DIR}/member ] || {{ grep -q '=existing$' {INITIAL_CLUSTER_ENV} && {listed}; }}"
        ),
    }
}

pub const SNAPSHOT_SCRIPT: &str = "/usr/local/lib/provision/etcd-snapshot";
pub const SNAPSHOT_SERVICE: &str = "/etc/systemd/system/provision-etcd-snapshot.service";
pub const SNAPSHOT_TIMER: &str = "/etc/systemd/system/provision-etcd-snapshot.timer";
pub const SNAPSHOT_TIMER_UNIT: &str = "provision-etcd-snapshot.timer";

/// `spec.etcd.snapshots`: a timer that takes a snapshot (checked by etcdutl) and keeps the
/// newest `keep`; without it, the timer and its files go.
fn scheduled_snapshots(cluster: &Cluster) -> Vec<Action> {
    let Some(s) = &cluster.etcd_snapshots else {
        return vec![
            Action::Unit(UnitSpec {
                name: SNAPSHOT_TIMER_UNIT.into(),
                enabled: false,
                active: false,
                restart_when_changed: Vec::new(),
            }),
            Action::absent(SNAPSHOT_TIMER),
            Action::absent(SNAPSHOT_SERVICE),
            Action::absent(SNAPSHOT_SCRIPT),
        ];
    };
    let dir = &s.dir;
    // scheduled ones are named scheduled-*: only those are pruned, a kept manual one stays
    let script = [
        "#!/bin/sh".to_string(),
        format!(
            "# provision: a scheduled etcd snapshot; the newest {} are kept",
            s.keep
        ),
        "set -eu".into(),
        "umask 077".into(),
        format!("mkdir -p {dir}"),
        format!("name={dir}/scheduled-$(date -u +%Y%m%dT%H%M%SZ).db"),
        format!(
            "{} >/dev/null",
            etcdctl("--command-timeout=600s snapshot save \"$name.part\"")
        ),
        "etcdutl snapshot status \"$name.part\" -w json >/dev/null".into(),
        "mv \"$name.part\" \"$name\"".into(),
        format!(
            "ls -1t {dir}/scheduled-*.db | tail -n +{} | xargs -r rm -f",
            s.keep + 1
        ),
    ]
    .join("\n")
        + "\n";
    let service = Unit::new("provision: an etcd snapshot", SNAPSHOT_SCRIPT)
        .after(&["etcd.service"])
        .service(&[("Type", "oneshot")]);
    let timer = format!(
        "[Unit]\nDescription=provision: etcd snapshots ({schedule}, the newest {keep} kept in {dir})\n\n\
         [Timer]\nOnCalendar={schedule}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
        schedule = s.schedule,
        keep = s.keep,
    );
    let mut actions = vec![Action::dir("/usr/local/lib/provision", 0o755)];
    actions.push(Action::file(SNAPSHOT_SCRIPT, script, 0o755));
    match service.render() {
        Ok(text) => actions.push(Action::file(SNAPSHOT_SERVICE, text, 0o644)),
        Err(e) => actions.push(Action::Exec {
            label: format!("render {SNAPSHOT_SERVICE}"),
            cmd: format!("echo {} >&2; exit 1", crate::ssh::shell_quote(&e)),
            unless: "false".into(),
        }),
    }
    actions.push(Action::file(SNAPSHOT_TIMER, timer, 0o644));
    actions.push(Action::Unit(UnitSpec {
        name: SNAPSHOT_TIMER_UNIT.into(),
        enabled: true,
        active: true,
        restart_when_changed: vec![SNAPSHOT_TIMER.into(), SNAPSHOT_SERVICE.into()],
    }));
    actions
}

#[async_trait::async_trait]
impl Step for Etcd {
    type Shared = ();

    fn applies_to(&self, _: &Cluster, host: &Host) -> bool {
        host.control_plane
    }

    /// Each new member must be running before the next is added, or quorum is lost.
    fn one_at_a_time(&self) -> bool {
        true
    }

    fn desired(
        &self,
        cluster: &Cluster,
        host: &Host,
        _: &Observed,
        _: &(),
    ) -> Result<Desired, String> {
        let seed = cluster.seed_control_plane().ok_or("no control plane")?;
        // the seed starts a new cluster when it has none; every other member joins the cluster
        // the seed is in. --initial-cluster and its state only matter on a member's first start,
        // and the right list is the cluster's membership at that moment (members come and go
        // with `join` and `reset --hosts`), so they are found then and written to an
        // environment file beside the unit: the unit itself is the same on every member and
        // every run, and changing the seed restarts nothing.
        let joining = seed.name != host.name;
        let peer = url(&host.address, 2380);
        let args = vec![
            format!("--name={}", host.name),
            format!("--data-dir={DATA_DIR}"),
            format!("--listen-client-urls=https://127.0.0.1:2379,{}", url(&host.address, 2379)),
            format!("--advertise-client-urls={}", url(&host.address, 2379)),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            "--client-cert-auth=true".into(),
            format!("--trusted-ca-file={PKI}/ca.crt"),
            format!("--cert-file={PKI}/server.crt"),
            format!("--key-file={PKI}/server.key"),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-trusted-ca-file={PKI}/ca.crt"),
            format!("--peer-cert-file={PKI}/peer.crt"),
            format!("--peer-key-file={PKI}/peer.key"),
            "--listen-metrics-urls=http://127.0.0.1:2381".into(),
            "--snapshot-count=10000".into(),
            "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
        ];
        let unit = Unit::new("etcd: the cluster's key-value store", "/usr/local/bin/etcd")
            // its listen address, not every link online
            .after(&["network.target"])
            .once_address_is_up(&host.address)
            .args(&args)
            .service(&[
                ("Type", "notify"),
                ("Restart", "always"),
                ("RestartSec", "5"),
                ("LimitNOFILE", "65536"),
                ("EnvironmentFile", &format!("-{INITIAL_CLUSTER_ENV}")),
            ]);
        let mut actions = vec![
            Action::dir(DATA_DIR, 0o700),
            Action::file(UNIT, unit.render()?, 0o644),
        ];
        actions.push(if joining {
            join_cluster(&seed.address, host, &peer)
        } else {
            start_cluster(host, &peer)
        });
        actions.push(Action::Unit(UnitSpec {
            name: "etcd.service".into(),
            enabled: true,
            active: true,
            restart_when_changed: vec![UNIT.into()],
        }));
        actions.extend(scheduled_snapshots(cluster));
        Ok(actions.into())
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, Self::Shared>,
    ) -> Result<step::After, String> {
        let session = ctx.session(host).await.map_err(|e| e.to_string())?;
        let health = etcdctl("endpoint health");
        let check = format!("{health} >/dev/null 2>&1");
        let wait = systemd::wait_for(&check, 150, 0.2);
        systemd::wait_or_journal(&session, &wait, Some(&health), "etcd", 15)
            .await
            .map_err(|why| {
                format!(
                    "etcd is not healthy after 30 s:\n{why}check the certificates in {PKI} and `journalctl -u etcd`"
                )
            })?;
        Ok(step::After::default())
    }
}
