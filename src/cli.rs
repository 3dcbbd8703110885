//! Command-line definitions (clap). Behaviour lives in main.rs and the modules it calls.

use crate::output::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "provision",
    version,
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
    /// Bring up the first control plane (all phases, or one with `init phase <path>`)
    Init(InitArgs),
    /// Add hosts of the inventory to the cluster
    Join(JoinArgs),
    /// Take Kubernetes off hosts: the named hosts leave the cluster (drained, etcd member
    /// removed, Node deleted), or, without --hosts, the whole cluster goes
    Reset(ResetArgs),
    /// Check the cluster keeps Kubernetes' network rules: a table, non-zero exit on any failure
    Verify {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Validate an inventory and print the resolved cluster
    Check {
        #[arg(short, long, value_name = "FILE")]
        inventory: PathBuf,
    },
    /// Print the phase tree of init and join
    Phases,
    /// Certificates on the control planes: expiry and renewal
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The pinned components: list, fetch into the cache, pack for air-gapped sites, verify
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
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
pub enum CertsCommand {
    /// A table per control plane: each certificate, when it expires, its CA
    CheckExpiration {
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
pub struct InitArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub phase: Option<InitPhase>,
}

#[derive(Subcommand)]
pub enum InitPhase {
    /// Run one phase, or every phase under a path (e.g. `host`, `host/kernel`)
    Phase { path: String },
}

#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub phase: Option<InitPhase>,
    /// Only these hosts (inventory names, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "NAMES", global = true)]
    pub hosts: Vec<String>,
}

#[derive(Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub phase: Option<InitPhase>,
    /// Only these hosts, which leave a cluster that stays (inventory names, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "NAMES", global = true)]
    pub hosts: Vec<String>,
    /// Go ahead without asking (reset deletes etcd's data, certificates and pods)
    #[arg(long, global = true)]
    pub yes: bool,
}

#[derive(Args)]
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
}
