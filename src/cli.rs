//! Command-line definitions (clap). Behaviour lives in main.rs and the modules it calls.

use crate::completion::{self, Shell};
use crate::output::Format;
use clap::{Args, Parser, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use std::path::PathBuf;
use std::sync::LazyLock;

/// `provision --version`: the release and the Kubernetes version an inventory gets by default.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (Kubernetes {} by default)",
        env!("CARGO_PKG_VERSION"),
        crate::version::Version::default_version()
    )
});

#[derive(Parser)]
#[command(
    name = "provision",
    version = VERSION.as_str(),
    about = "Turns plain Linux machines into a working Kubernetes cluster over SSH",
    after_help = "Exit codes: 0 success, 1 a phase failed on a host, 2 bad input (inventory, flags, phase names)."
)]
pub struct Cli {
    /// Show every change and check, not just counts
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Output format
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Bring up the first control plane: the seed, the inventory's first for a new cluster (all phases, or one with `init phase <path>`)
    Init(InitArgs),
    /// Add hosts of the inventory to the cluster
    Join(JoinArgs),
    /// Converge the cluster on the inventory: init when there is none, the upgrade when
    /// kubernetesVersion moved (its plan shown, then asked; --yes), join the hosts that are
    /// not Nodes, re-apply everything else; no change when nothing moved
    Apply {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        upgrade: UpgradeArgs,
    },
    /// Take Kubernetes off hosts: the named hosts leave the cluster (drained, etcd member
    /// removed, Node deleted), or, without --hosts, the whole cluster goes
    Reset(ResetArgs),
    /// Check the cluster keeps Kubernetes' network rules: a table, non-zero exit on any failure
    Verify {
        #[command(flatten)]
        run: RunArgs,
    },
    /// One screen per cluster: per host Ready, versions, units and pending changes; etcd,
    /// the API endpoint and the certificates soonest to expire. Changes nothing; exit 1 when
    /// something is off (named)
    Status {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Validate an inventory and print the resolved cluster
    Check {
        #[arg(short, long, value_name = "FILE")]
        inventory: PathBuf,
    },
    /// Print the phase trees of init, join and reset
    Phases,
    /// Certificates on every host: expiry and renewal
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The pinned components: list, fetch into the cache, pack for air-gapped sites, verify
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Print the cluster's admin kubeconfig (read from a control plane), or merge it into
    /// ~/.kube/config; `--user` issues one for a person instead
    Kubeconfig(KubeconfigArgs),
    /// etcd, the cluster's state: snapshots saved, listed and restored
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    /// One archive with an etcd snapshot and the keys it needs (the CAs, the service-account
    /// key, the Secrets encryption key): secret, written 0600
    Backup {
        #[command(flatten)]
        run: RunArgs,
        /// The archive (default: beside the inventory, CLUSTER-backup-TIME.secret.tar)
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Upgrades: `plan` says what an upgrade to the inventory's kubernetesVersion would change,
    /// in which order, and what refuses it
    Upgrade {
        #[command(subcommand)]
        command: UpgradeCommand,
    },
    /// Bring a cluster back from a `backup` archive on control planes that hold none (reset,
    /// or new machines): the archive's CAs and keys go to the seed control plane, `init` runs
    /// there, the archive's snapshot is restored into its etcd; then `join` brings the others
    Restore {
        #[command(flatten)]
        run: RunArgs,
        /// The archive `provision backup` wrote
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Go ahead without asking
        #[arg(long)]
        yes: bool,
    },
    /// Print the script that completes commands, phases and host names in a shell
    /// (bash: `source <(provision completion bash)`)
    Completion {
        shell: Shell,
        /// The command the script calls back (default: this binary's full path)
        #[arg(long, value_name = "COMMAND")]
        binary: Option<String>,
    },
    /// Print the manual page (roff)
    #[command(hide = true)]
    Man,
    /// Approve the kubelets' serving certificate requests that name their own node, until
    /// stopped (the unit the csr-approver phase installs on the control planes runs this)
    #[command(hide = true)]
    ApproveKubeletServing {
        #[arg(long, value_name = "FILE")]
        kubeconfig: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Each component the inventory needs: version, architecture, source, digest, cached or not
    List {
        #[arg(short, long, value_name = "FILE")]
        inventory: PathBuf,
    },
    /// Download everything the inventory needs, for every host architecture, into the cache
    Fetch {
        #[arg(short, long, value_name = "FILE")]
        inventory: PathBuf,
    },
    /// Write a bundle directory (or, for a .tar path, a tarball of one) for air-gapped sites
    Pack {
        #[arg(short, long, value_name = "FILE")]
        inventory: PathBuf,
        /// A new or empty directory, or a path ending in .tar
        #[arg(short = 'o', long = "out", value_name = "DIR|FILE.tar")]
        dest: PathBuf,
    },
    /// Check every file of a bundle directory against the digests of its bundle.yaml
    Verify { dir: PathBuf },
}

#[derive(Subcommand)]
pub enum EtcdCommand {
    /// Snapshots of etcd: save one here, list those kept on the control planes, restore one
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot from a healthy member, check it with etcdutl, copy it here (0600, with
    /// its sha256 beside it). Secrets stay encrypted in it: restoring needs the Secrets key
    /// and the CAs too (`provision backup` keeps them together)
    Save {
        #[command(flatten)]
        run: RunArgs,
        /// The snapshot file (default: beside the inventory, CLUSTER-etcd-TIME.db)
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// Keep a copy on the host too, in /var/lib/provision/etcd-snapshots
        #[arg(long)]
        keep_on_host: bool,
    },
    /// The snapshots kept on the control planes: age, size, revision
    List {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Put the cluster's state back to a snapshot's on every control plane (the API servers
    /// and etcd stop meanwhile; nodes and pods come back without re-joining)
    Restore {
        #[command(flatten)]
        run: RunArgs,
        /// The snapshot (with the .sha256 and .json that `snapshot save` wrote beside it)
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Go ahead without asking
        #[arg(long)]
        yes: bool,
        /// Restore over healthy members (what was written since the snapshot is lost), or a
        /// snapshot without the files beside it
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum UpgradeCommand {
    /// Per host and component, from → to, in the order an upgrade goes (etcd, control planes,
    /// add-ons, then nodes: workers in batches), and what refuses it (a skipped minor, a
    /// downgrade, the skew policy, a Node not Ready, an etcd member unhealthy, a certificate
    /// about to expire). Exit 2 when refused; changes nothing
    Plan {
        #[command(flatten)]
        run: RunArgs,
        /// Workers upgraded at once: a number, or a percentage of the workers (25%)
        #[arg(long, value_name = "N|P%", default_value = "1")]
        max_unavailable: String,
        /// Do not refuse for objects of API versions the new release no longer serves (they
        /// are listed either way)
        #[arg(long)]
        ignore_deprecated_apis: bool,
        /// Plan an upgrade over several minors as a chain of one-minor upgrades (its first
        /// step in full)
        #[arg(long)]
        chain: bool,
    },
    /// Upgrade to the inventory's kubernetesVersion, in the plan's order: an etcd snapshot
    /// beside the inventory, the new files shipped to every host, the control planes one at a
    /// time, the add-ons, then the nodes (drained, switched, Ready, uncordoned; workers in
    /// batches). A host that does not come back is rolled back and the run stops; running it
    /// again continues where it stopped. Asks first (--yes without a terminal)
    Apply {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        upgrade: UpgradeArgs,
    },
}

/// How an upgrade goes.
#[derive(Args, Clone)]
pub struct UpgradeArgs {
    /// Workers upgraded at once: a number, or a percentage of the workers (25%)
    #[arg(long, value_name = "N|P%", default_value = "1")]
    pub max_unavailable: String,
    /// How long a drain waits for evictions a PodDisruptionBudget refuses, then stops
    /// naming the pods (e.g. 5m, 90s)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = drain_timeout)]
    pub drain_timeout: std::time::Duration,
    /// Go ahead with an upgrade without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Upgrade although objects are reached through API versions the new release no longer
    /// serves (they are listed either way)
    #[arg(long)]
    pub ignore_deprecated_apis: bool,
    /// When the drain's wait is over, delete the pods a PodDisruptionBudget still protects
    /// (instead of stopping)
    #[arg(long)]
    pub force: bool,
    /// Go up several minors: one whole upgrade per minor (the catalog's release of each minor
    /// between), each verified before the next
    #[arg(long)]
    pub chain: bool,
}

fn drain_timeout(text: &str) -> Result<std::time::Duration, String> {
    crate::phases::expiration::parse_duration(text)
        .map(|s| std::time::Duration::from_secs(s as u64))
}

#[derive(Subcommand)]
pub enum CertsCommand {
    /// A table per host: each certificate, when it expires, its CA (the kubelets' too)
    CheckExpiration {
        /// Exit 1, naming each, when a certificate expires within this (e.g. 30d, 72h), is
        /// missing or cannot be read
        #[arg(long, value_name = "DURATION")]
        warn_within: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Re-issue a certificate or kubeconfig (e.g. apiserver, admin) now, or `all` of them
    Renew {
        name: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Merge into this kubeconfig instead of printing (without a path: the first file of
    /// $KUBECONFIG, else ~/.kube/config); every other context, cluster and user is kept
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub merge: Option<Option<PathBuf>>,
    /// The name of the merged context, cluster and user (default: the cluster's name, or
    /// USER@CLUSTER with --user)
    #[arg(long, value_name = "NAME", requires = "merge")]
    pub context: Option<String>,
    /// Replace same-named entries that belong to another cluster (another CA)
    #[arg(long, requires = "merge")]
    pub force: bool,
    /// Issue a client certificate for this person instead of giving the admin's; RBAC must
    /// bind the name or a group before it can do anything
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The person's groups (repeat, or comma-separate)
    #[arg(long, value_name = "GROUP", value_delimiter = ',', requires = "user")]
    pub group: Vec<String>,
    /// How long the person's certificate is valid, in days
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: u32,
}

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub phase: Option<InitPhase>,
}

#[derive(Subcommand)]
pub enum InitPhase {
    /// Run one phase, or every phase under a path (e.g. `host`, `host/kernel`)
    Phase {
        #[arg(add = ArgValueCompleter::new(completion::phase_paths))]
        path: String,
    },
}

#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub phase: Option<InitPhase>,
    /// Only these hosts (inventory names, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "NAMES", global = true,
          add = ArgValueCompleter::new(completion::host_names))]
    pub hosts: Vec<String>,
}

#[derive(Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub phase: Option<InitPhase>,
    /// Only these hosts, which leave a cluster that stays (inventory names, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "NAMES", global = true,
          add = ArgValueCompleter::new(completion::host_names))]
    pub hosts: Vec<String>,
    /// Go ahead without asking (reset deletes etcd's data, certificates and pods)
    #[arg(long, global = true)]
    pub yes: bool,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// The inventory file
    #[arg(short, long, value_name = "FILE", global = true)]
    pub inventory: Option<PathBuf>,
    /// Show what would change, change nothing
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Phases to skip, by path (a path skips its subtree)
    #[arg(long, value_delimiter = ',', value_name = "PATHS", global = true)]
    pub skip_phases: Vec<String>,
    /// How many hosts a phase works on at once
    #[arg(long, default_value_t = 32, global = true)]
    pub concurrency: usize,
    /// Preflight checks whose errors become warnings, by name, or `all`
    #[arg(long, value_delimiter = ',', value_name = "CHECKS", global = true)]
    pub ignore_preflight_errors: Vec<String>,
    /// Record the host keys of hosts not yet in known_hosts (changed keys are still refused)
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,
    /// For plans (--dry-run, `upgrade plan`): exit 0 when nothing is to be done, 2 when
    /// changes are pending, 1 on an error
    #[arg(long, global = true)]
    pub detailed_exitcode: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge_of(args: &[&str]) -> Option<Option<PathBuf>> {
        match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Kubeconfig(k)) => k.merge,
            Ok(_) => panic!("not kubeconfig"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn merge_takes_a_path_or_none() {
        let base = ["provision", "kubeconfig", "-i", "inv.yaml"];
        assert_eq!(merge_of(&base), None);
        assert_eq!(merge_of(&[&base[..], &["--merge"]].concat()), Some(None));
        assert_eq!(
            merge_of(&[&base[..], &["--merge", "k.conf"]].concat()),
            Some(Some(PathBuf::from("k.conf")))
        );
        // a flag after it is not taken for its path
        assert_eq!(
            merge_of(&[&base[..], &["--merge", "--force"]].concat()),
            Some(None)
        );
    }
}
