// As in the library: no panics, only errors that say what to do.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::{CommandFactory, Parser};
use provision::bundle;
use provision::cli::{
    BundleCommand, CertsCommand, Cli, Command, EtcdCommand, InitPhase, KubeconfigArgs, RunArgs,
    SnapshotCommand, UpgradeArgs, UpgradeCommand,
};
use provision::cluster::{self, Cluster, Host};
use provision::output::{Format, Reporter};
use provision::phases::{self, Phase, Scope};
use provision::run::{Ctx, Options};
use provision::{inventory, ssh, verify};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit codes, as documented in README.md.
const EXIT_PHASE_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
/// With --detailed-exitcode: the plan has changes to make.
const EXIT_CHANGES_PENDING: u8 = 2;
/// Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    // a completion request from the shell script of `provision completion`: answered, then exit
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(provision::completion::VAR)
        .complete();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_PHASE_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

async fn run(cli: Cli) -> Result<(), u8> {
    match cli.command {
        Command::Phases => {
            print_tree("init", &phases::init_tree());
            print_tree("join", &phases::join_tree());
            print_tree("reset", &phases::reset::tree(true));
            Ok(())
        }
        Command::Check { inventory } => {
            let cluster = load(&inventory)?;
            print_cluster(&cluster, cli.output);
            Ok(())
        }
        Command::Init(args) => {
            let only = args.phase.map(|InitPhase::Phase { path }| path);
            let tree = phases::init_tree();
            let cluster = load_for(&args.run)?;
            if cluster.control_planes().next().is_none() {
                return Err(EXIT_BAD_INPUT);
            }
            // Preflight looks at every host of the inventory before anything changes;
            // state-changing phases of init act on the seed control plane.
            let scope = Targets::Seed;
            let command = command_name("init", only.as_deref());
            let job = Job {
                command,
                tree: &tree,
                only: only.as_deref(),
                scope,
            };
            execute(cli.verbose, cli.output, &args.run, cluster, job).await
        }
        Command::Certs {
            command: CertsCommand::CheckExpiration { run, warn_within },
        } => {
            let warn_within = warn_within
                .as_deref()
                .map(phases::expiration::parse_duration)
                .transpose()
                .map_err(|e| fail_with(EXIT_BAD_INPUT)(format!("--warn-within {e}")))?;
            let cluster = load_for(&run)?;
            let ctx = command_context(cli.verbose, cli.output, &run, cluster).await?;
            let result = phases::expiration::report(&ctx, warn_within).await;
            ctx.close().await;
            result.map_err(|_| EXIT_PHASE_FAILED)
        }
        Command::Certs {
            command: CertsCommand::Renew { name, run },
        } => certs_renew(cli.verbose, cli.output, run, name).await,
        Command::Bundle { command } => run_bundle(command, cli.output).await,
        Command::Status { run } => {
            let cluster = load_for(&run)?;
            // read-only: every phase it runs is a dry run, reported into memory
            let run = RunArgs {
                dry_run: true,
                ..run
            };
            let mut ctx = command_context(cli.verbose, cli.output, &run, cluster).await?;
            ctx.options.local_kubeconfig = None;
            ctx.out = Reporter::capturing(Format::Json, false, true);
            let status = provision::status::collect(&ctx).await;
            ctx.close().await;
            provision::status::print(&status, cli.output);
            if status.healthy() {
                Ok(())
            } else {
                Err(EXIT_PHASE_FAILED)
            }
        }
        Command::Etcd {
            command: EtcdCommand::Snapshot { command },
        } => snapshot(cli.verbose, cli.output, command).await,
        Command::Backup { run, out } => {
            let cluster = load_for(&run)?;
            let out = out.unwrap_or_else(|| {
                beside_inventory(&run, &provision::snapshot::backup_name(&cluster.name))
            });
            let ctx = command_context(cli.verbose, cli.output, &run, cluster).await?;
            let result = provision::snapshot::backup(&ctx, &out).await;
            ctx.close().await;
            let b = result.map_err(fail_with(EXIT_PHASE_FAILED))?;
            match cli.output {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&b).unwrap_or_default())
                }
                Format::Text => println!(
                    "backup written to {} (0600): etcd at revision {} ({} keys, from {}), {} key files.\n\
                     It holds the cluster's CA keys and its Secrets key: keep it as you keep passwords.",
                    b.path.display(),
                    b.snapshot.status.revision,
                    b.snapshot.status.total_keys,
                    b.snapshot.host,
                    b.files.len()
                ),
            }
            Ok(())
        }
        Command::Kubeconfig(args) => kubeconfig(cli.verbose, cli.output, args).await,
        Command::Upgrade {
            command:
                UpgradeCommand::Plan {
                    run,
                    max_unavailable,
                    ignore_deprecated_apis,
                    chain,
                },
        } => {
            let detailed_exitcode = run.detailed_exitcode;
            let cluster = load_for(&run)?;
            let name = cluster.name.clone();
            let error_code = if detailed_exitcode {
                EXIT_PHASE_FAILED
            } else {
                EXIT_BAD_INPUT
            };
            let chain = chain_of(cli.verbose, cli.output, &run, &cluster, chain).await?;
            let first = Cluster {
                version: chain[0],
                ..cluster
            };
            let ctx = command_context(cli.verbose, cli.output, &run, first).await?;
            let plan =
                provision::upgrade::plan_for(&ctx, &max_unavailable, false, ignore_deprecated_apis)
                    .await;
            ctx.close().await;
            let mut plan = plan.map_err(fail_with(error_code))?;
            if chain.len() > 1 {
                plan.chain = chain.iter().map(|v| v.to_string()).collect();
            }
            provision::upgrade::print(&name, &plan, cli.output);
            match (
                plan.refusals.is_empty(),
                detailed_exitcode,
                plan.nothing_to_do(),
            ) {
                (false, _, _) => Err(error_code),
                (true, true, false) => Err(EXIT_CHANGES_PENDING),
                _ => Ok(()),
            }
        }
        Command::Upgrade {
            command: UpgradeCommand::Apply { run, upgrade },
        } => converge(cli.verbose, cli.output, run, upgrade, false).await,
        Command::Apply { run, upgrade } => {
            converge(cli.verbose, cli.output, run, upgrade, true).await
        }
        Command::Restore { run, from, yes } => {
            restore_backup(cli.verbose, cli.output, run, from, yes).await
        }
        Command::Completion { shell, binary } => {
            // the script calls this binary back, by its full path when it can be known
            let binary = binary.unwrap_or_else(|| {
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "provision".into())
            });
            provision::completion::write_script(shell, &binary, &mut std::io::stdout())
                .map_err(|e| fail_with(EXIT_PHASE_FAILED)(e.to_string()))
        }
        Command::ApproveKubeletServing { kubeconfig } => provision::approver::run(&kubeconfig)
            .await
            .map_err(fail_with(EXIT_PHASE_FAILED)),
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| fail_with(EXIT_PHASE_FAILED)(e.to_string())),
        Command::Verify { run } => {
            let cluster = load_for(&run)?;
            let ctx = command_context(cli.verbose, cli.output, &run, cluster).await?;
            let result = verify::run(&ctx, verify::Expect::All).await;
            ctx.close().await;
            match result {
                Ok(report) => {
                    match cli.output {
                        Format::Json => println!("{}", report.json()),
                        Format::Text => print!("{}", report.table()),
                    }
                    if report.passed() {
                        Ok(())
                    } else {
                        Err(EXIT_PHASE_FAILED)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Err(EXIT_PHASE_FAILED)
                }
            }
        }
        Command::Reset(args) => {
            let only = args.phase.map(|InitPhase::Phase { path }| path);
            let cluster = load_for(&args.run)?;
            let hosts = reset_hosts(&cluster, &args.hosts)?;
            let cluster_stays = hosts.len() < cluster.hosts.len();
            if !args.run.dry_run && !args.yes && !confirmed(&hosts, cluster_stays) {
                return Err(EXIT_BAD_INPUT);
            }
            let tree = phases::reset::tree(cluster_stays);
            let command = command_name("reset", only.as_deref());
            let job = Job {
                command,
                tree: &tree,
                only: only.as_deref(),
                scope: Targets::Leaving(hosts),
            };
            execute(cli.verbose, cli.output, &args.run, cluster, job).await
        }
        Command::Join(args) => {
            let only = args.phase.map(|InitPhase::Phase { path }| path);
            let tree = phases::join_tree();
            let cluster = load_for(&args.run)?;
            let scope = Targets::Joining(named_hosts(&cluster, &args.hosts)?);
            let command = command_name("join", only.as_deref());
            let job = Job {
                command,
                tree: &tree,
                only: only.as_deref(),
                scope,
            };
            execute(cli.verbose, cli.output, &args.run, cluster, job).await
        }
    }
}

async fn run_bundle(command: BundleCommand, format: Format) -> Result<(), u8> {
    match command {
        BundleCommand::List { inventory } => {
            let cluster = load(&inventory)?;
            let rows = bundle::ops::list(&cluster, &bundle::lock::path_for(&inventory))
                .map_err(fail_with(EXIT_BAD_INPUT))?;
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
                return Ok(());
            }
            println!(
                "{:<32} {:<12} {:<6} {:<10} {:<7} SOURCE",
                "COMPONENT", "VERSION", "ARCH", "VERIFIED", "CACHED"
            );
            for r in rows {
                println!(
                    "{:<32} {:<12} {:<6} {:<10} {:<7} {}",
                    r.component,
                    r.version,
                    r.arch,
                    r.verified_by,
                    if r.cached { "yes" } else { "no" },
                    r.source
                );
            }
            Ok(())
        }
        BundleCommand::Fetch { inventory } => {
            let cluster = load(&inventory)?;
            let lock = bundle::lock::path_for(&inventory);
            let (n, prepared) = bundle::ops::fetch(&cluster, &lock)
                .await
                .map_err(fail_with(EXIT_PHASE_FAILED))?;
            if !prepared.newly_locked.is_empty() {
                println!(
                    "recorded the published digests of {} in {}",
                    prepared.newly_locked.join(", "),
                    lock.display()
                );
            }
            println!(
                "{n} components ready ({} downloaded now)",
                bundle::fetch::human_bytes(prepared.bytes_fetched)
            );
            Ok(())
        }
        BundleCommand::Pack { inventory, dest } => {
            let cluster = load(&inventory)?;
            let said = bundle::ops::pack(&cluster, &bundle::lock::path_for(&inventory), &dest)
                .await
                .map_err(fail_with(EXIT_PHASE_FAILED))?;
            println!("{said}");
            Ok(())
        }
        BundleCommand::Verify { dir } => match bundle::ops::verify(&dir) {
            Ok(n) => {
                println!("{}: all {n} files match bundle.yaml", dir.display());
                Ok(())
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                Err(EXIT_PHASE_FAILED)
            }
        },
    }
}

/// `provision etcd snapshot save|list`.
async fn snapshot(verbose: bool, format: Format, command: SnapshotCommand) -> Result<(), u8> {
    use provision::snapshot;
    match command {
        SnapshotCommand::Save {
            run,
            out,
            keep_on_host,
        } => {
            let cluster = load_for(&run)?;
            let out =
                out.unwrap_or_else(|| beside_inventory(&run, &snapshot::file_name(&cluster.name)));
            let ctx = command_context(verbose, format, &run, cluster).await?;
            let result = snapshot::save(&ctx, &out, keep_on_host).await;
            ctx.close().await;
            let saved = result.map_err(fail_with(EXIT_PHASE_FAILED))?;
            match format {
                Format::Json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&saved).unwrap_or_default()
                    )
                }
                Format::Text => {
                    println!(
                        "snapshot of etcd on {}: revision {}, {} keys, {} bytes, hash {}",
                        saved.host,
                        saved.status.revision,
                        saved.status.total_keys,
                        saved.status.total_size,
                        saved.status.hash
                    );
                    println!(
                        "written to {} (0600), sha256 {} in {}",
                        saved.path.display(),
                        saved.sha256,
                        snapshot::sha256_path(&saved.path).display()
                    );
                    if let Some(kept) = &saved.kept_on_host {
                        println!("kept on {} as {kept}", saved.host);
                    }
                    println!(
                        "Secrets in it stay encrypted: a restore needs the cluster's Secrets key and CAs too (`provision backup` keeps them together)."
                    );
                }
            }
            Ok(())
        }
        SnapshotCommand::Restore {
            run,
            from,
            yes,
            force,
        } => restore(verbose, format, run, from, yes, force).await,
        SnapshotCommand::List { run } => {
            let cluster = load_for(&run)?;
            let ctx = command_context(verbose, format, &run, cluster).await?;
            let result = snapshot::list(&ctx).await;
            ctx.close().await;
            let kept = result.map_err(fail_with(EXIT_PHASE_FAILED))?;
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&kept).unwrap_or_default()
                );
                return Ok(());
            }
            println!(
                "{:<16} {:<10} {:>12} {:>10}  PATH",
                "HOST", "AGE", "BYTES", "REVISION"
            );
            for k in kept {
                println!(
                    "{:<16} {:<10} {:>12} {:>10}  {}",
                    k.host,
                    age(k.age_seconds),
                    k.bytes,
                    k.status
                        .map_or("unreadable".to_string(), |s| s.revision.to_string()),
                    k.path
                );
            }
            Ok(())
        }
    }
}

/// `etcd snapshot restore`: checked, planned, asked, then run.
async fn restore(
    verbose: bool,
    format: Format,
    run: RunArgs,
    from: std::path::PathBuf,
    yes: bool,
    force: bool,
) -> Result<(), u8> {
    use provision::snapshot::{self, restore};
    let cluster = load_for(&run)?;
    let ctx = command_context(verbose, format, &run, cluster).await?;
    let result = async {
        let provenance = restore::check(&ctx, &from, force)
            .await
            .map_err(fail_with(EXIT_BAD_INPUT))?;
        let stamp = snapshot::stamp();
        let targets = restore::Targets::whole(&ctx.cluster);
        let steps = restore::plan(&ctx, &from, &provenance, &stamp, &targets);
        if run.dry_run {
            println!("restore (dry run): nothing is changed; it would:");
            for s in &steps {
                println!("  - {s}");
            }
            return Ok(());
        }
        let healthy = restore::healthy_members(&ctx).await;
        if !healthy.is_empty() && !force {
            eprintln!(
                "error: etcd is healthy on {}: a restore replaces its data with the snapshot's (revision {}), and what was written since is lost. Pass --force to go ahead; nothing was changed",
                healthy.join(", "),
                provenance.status.revision
            );
            return Err(EXIT_BAD_INPUT);
        }
        if !yes && !ask(&steps.join("\n  then: ")) {
            return Err(EXIT_BAD_INPUT);
        }
        let done = restore::run(&ctx, &from, &provenance, &stamp, &targets)
            .await
            .map_err(fail_with(EXIT_PHASE_FAILED))?;
        for line in done {
            println!("{line}");
        }
        println!(
            "etcd is back at revision {}: the nodes reconnect by themselves (provision status -i FILE shows them)",
            provenance.status.revision
        );
        Ok(())
    }
    .await;
    ctx.close().await;
    result
}

/// `provision restore --from ARCHIVE`: checked, planned, asked, then the keys, `init` and the
/// snapshot's restore on the seed control plane.
async fn restore_backup(
    verbose: bool,
    format: Format,
    run: RunArgs,
    from: std::path::PathBuf,
    yes: bool,
) -> Result<(), u8> {
    use provision::snapshot::{archive, restore};
    let cluster = load_for(&run)?;
    let backup = archive::read(&from).map_err(fail_with(EXIT_BAD_INPUT))?;
    let ctx = command_context(verbose, format, &run, cluster).await?;
    let result = async {
        archive::refuse_existing(&ctx, &backup)
            .await
            .map_err(fail_with(EXIT_BAD_INPUT))?;
        let seed = ctx
            .cluster
            .seed_control_plane()
            .cloned()
            .ok_or_else(|| fail_with(EXIT_BAD_INPUT)("the inventory has no control plane".into()))?;
        let stamp = provision::snapshot::stamp();
        let targets = restore::Targets {
            members: vec![&seed],
            nodes: ctx.cluster.hosts.iter().collect(),
            wait_for_workloads: false,
        };
        let p = &backup.provenance;
        let mut steps = vec![
            format!(
                "put the archive's CAs, service-account keys and Secrets key on {} (cluster {}, snapshot at revision {} taken {})",
                seed.name, p.cluster, p.status.revision, p.taken_at
            ),
            format!("run every phase of init on {} with them", seed.name),
        ];
        steps.extend(restore::plan(&ctx, &from, p, &stamp, &targets));
        steps.push("then `provision join -i INVENTORY` brings the other hosts back".into());
        if run.dry_run {
            println!("restore (dry run): nothing is changed; it would:");
            for s in &steps {
                println!("  - {s}");
            }
            return Ok(());
        }
        if !yes && !ask(&steps.join("\n  then: ")) {
            return Err(EXIT_BAD_INPUT);
        }
        let imported = archive::import(&ctx, &seed, &backup)
            .await
            .map_err(fail_with(EXIT_PHASE_FAILED))?;
        println!("{}: {} key files from the archive", seed.name, imported.len());
        let tree = phases::init_tree();
        let selected = phases::select(&tree, None, &run.skip_phases).map_err(fail_with(EXIT_BAD_INPUT))?;
        let scope = Scope {
            hosts: vec![seed.clone()],
            preflight_hosts: ctx.cluster.hosts.clone(),
        };
        let summary = phases::run(&ctx, "restore (init)", &selected, &scope).await;
        ctx.out.summary(&summary);
        if summary.failed_phase.is_some() {
            return Err(EXIT_PHASE_FAILED);
        }
        let dir = tempfile_dir().map_err(fail_with(EXIT_PHASE_FAILED))?;
        let result = async {
            let snapshot = backup.unpack_snapshot(&dir)?;
            let provenance = restore::check(&ctx, &snapshot, false).await?;
            restore::run(&ctx, &snapshot, &provenance, &stamp, &targets).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        for line in result.map_err(fail_with(EXIT_PHASE_FAILED))? {
            println!("{line}");
        }
        println!(
            "{} is back at the archive's revision {}: `provision join -i INVENTORY` brings the other hosts back",
            seed.name, p.status.revision
        );
        Ok(())
    }
    .await;
    ctx.close().await;
    result
}

/// `certs renew NAME|all`: the certificates and kubeconfigs on every host; then, on the hosts
/// that run a kubelet (a cluster made, not only its PKI), host after host, the units that read a
/// renewed file restart and an expired kubelet certificate bootstraps again.
async fn certs_renew(verbose: bool, format: Format, run: RunArgs, name: String) -> Result<(), u8> {
    let cluster = load_for(&run)?;
    let renewable = phases::certs::renewable();
    let names: Vec<String> = if name == "all" {
        renewable.iter().cloned().collect()
    } else if renewable.contains(&name) {
        vec![name.clone()]
    } else {
        eprintln!(
            "error: cannot renew {name:?}: renew one of {}, or all (CAs are not renewed this way)",
            renewable.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        return Err(EXIT_BAD_INPUT);
    };
    let ctx = command_context(verbose, format, &run, cluster.clone()).await?;
    let running = futures::future::join_all(cluster.hosts.iter().map(|h| async {
        let session = ctx.session(h).await.ok()?;
        let out = session
            .run("test -e /etc/systemd/system/kubelet.service && echo yes; true")
            .await
            .ok()?;
        (out.trim() == "yes").then(|| h.clone())
    }))
    .await;
    ctx.close().await;
    let running: Vec<Host> = running.into_iter().flatten().collect();
    let (pki, restart) = phases::certs::renew_trees();
    let mut skip = run.skip_phases.clone();
    skip.extend(
        phases::paths(&pki)
            .into_iter()
            .filter(|(p, ph)| {
                ph.children.is_empty() && !names.iter().any(|n| p.ends_with(&format!("/{n}")))
            })
            .map(|(p, _)| p),
    );
    let fixed = |hosts: Vec<Host>| {
        Targets::Fixed(Scope {
            hosts,
            preflight_hosts: Vec::new(),
        })
    };
    let renewing = RunArgs {
        skip_phases: skip,
        ..run.clone()
    };
    let job = Job {
        command: format!("certs renew {name}"),
        tree: &pki,
        only: None,
        scope: fixed(cluster.hosts.clone()),
    };
    execute_with(
        verbose,
        format,
        &renewing,
        cluster.clone(),
        job,
        names.into_iter().collect(),
    )
    .await?;
    if running.is_empty() {
        return Ok(());
    }
    let job = Job {
        command: format!("certs renew {name} (restart)"),
        tree: &restart,
        only: None,
        scope: fixed(running),
    };
    execute_with(verbose, format, &run, cluster, job, Default::default()).await
}

/// The versions an upgrade goes through: with `--chain`, one per minor from the oldest
/// Kubernetes component running up to the inventory's; else the inventory's alone.
async fn chain_of(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    cluster: &Cluster,
    chain: bool,
) -> Result<Vec<provision::version::Version>, u8> {
    if !chain {
        return Ok(vec![cluster.version]);
    }
    let ctx = command_context(verbose, format, run, cluster.clone()).await?;
    let oldest = provision::upgrade::chain::oldest_running(&ctx).await;
    ctx.close().await;
    match oldest {
        Some(oldest) => provision::upgrade::chain::versions(oldest, cluster.version)
            .map_err(fail_with(EXIT_BAD_INPUT)),
        None => Ok(vec![cluster.version]),
    }
}

/// `upgrade apply` (the upgrade only), or `apply` (`whole`: the cluster converged on the
/// inventory, the upgrade included). With `--chain`, one upgrade per minor, each verified
/// before the next. Interrupted (Ctrl-C, SIGTERM), it names the nodes it left cordoned.
async fn converge(
    verbose: bool,
    format: Format,
    run: RunArgs,
    upgrade: UpgradeArgs,
    whole: bool,
) -> Result<(), u8> {
    let cluster = load_for(&run)?;
    let chain = chain_of(verbose, format, &run, &cluster, upgrade.chain).await?;
    let steps = converge_chain(verbose, format, &run, &upgrade, whole, &cluster, &chain);
    tokio::select! {
        result = steps => result,
        signal = interrupted() => {
            eprintln!("\ninterrupted ({signal}): the run stopped where it was");
            let ctx = command_context(verbose, format, &run, cluster).await?;
            let cordoned = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                provision::upgrade::cordoned_by_upgrade(&ctx),
            )
            .await;
            ctx.close().await;
            match cordoned {
                Ok(Ok(nodes)) => {
                    for n in nodes {
                        eprintln!(
                            "{n} is left cordoned by this upgrade (`provision status` names it too): the same command, run again, takes it through its steps and uncordons it"
                        );
                    }
                }
                Ok(Err(e)) => eprintln!("cannot tell which nodes are left cordoned ({e}): `provision status -i FILE` names them"),
                Err(_) => eprintln!("cannot tell which nodes are left cordoned (no answer within 20 s): `provision status -i FILE` names them"),
            }
            eprintln!("run the same command again: it continues where it stopped");
            Err(EXIT_INTERRUPTED)
        }
    }
}

/// Ctrl-C or SIGTERM, by name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Every step of the chain; `provision apply`'s configuration and joins with the last one.
async fn converge_chain(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    upgrade: &UpgradeArgs,
    whole: bool,
    cluster: &Cluster,
    chain: &[provision::version::Version],
) -> Result<(), u8> {
    // asked once, for the whole chain
    let confirmed = std::cell::Cell::new(upgrade.yes);
    let through = provision::upgrade::chain::arrows(None, chain);
    let out = Reporter::new(format, verbose, run.dry_run);
    for (i, version) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        if chain.len() > 1 {
            out.record(
                "chain-step",
                "step",
                serde_json::json!({"step": i + 1, "of": chain.len(), "version": version.to_string()}),
                &format!(
                    "==> chain step {} of {}: Kubernetes {version} ({through})\n",
                    i + 1,
                    chain.len()
                ),
            );
        }
        let step = Cluster {
            version: *version,
            ..cluster.clone()
        };
        let confirm = || {
            let yes = confirmed.get()
                || ask(&format!(
                    "the cluster is upgraded to Kubernetes {through}, one minor at a time, in the order above (nodes are drained one batch at a time)"
                ));
            confirmed.set(yes);
            yes
        };
        let pending =
            converge_to(verbose, format, run, upgrade, (whole, last), step, confirm).await?;
        // a dry run plans the first step only: the next ones start from what it would leave
        if run.dry_run {
            if !last {
                out.note(&format!(
                    "then {}: planned once Kubernetes {version} is verified",
                    provision::upgrade::chain::arrows(None, &chain[i + 1..])
                ));
            }
            return match pending && run.detailed_exitcode {
                true => Err(EXIT_CHANGES_PENDING),
                false => Ok(()),
            };
        }
    }
    Ok(())
}

/// One upgrade to `cluster`'s version; for `provision apply` (`whole`) on the hosts that are
/// Nodes, and with its configuration and joins on the `last` step. Whether there was anything
/// to do, or the exit code.
async fn converge_to(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    upgrade: &UpgradeArgs,
    (whole, last): (bool, bool),
    cluster: Cluster,
    confirm: impl Fn() -> bool,
) -> Result<bool, u8> {
    use provision::upgrade::apply::{self, Stop};
    let snapshot = beside_inventory(
        run,
        &format!(
            "{}-etcd-before-{}-{}.db",
            cluster.name,
            cluster.version,
            provision::snapshot::stamp()
        ),
    );
    let to = cluster.version;
    let ctx = command_context(verbose, format, run, cluster).await?;
    let opts = apply::Options {
        max_unavailable: upgrade.max_unavailable.clone(),
        drain_timeout: upgrade.drain_timeout,
        joined_only: whole,
        ignore_deprecated: upgrade.ignore_deprecated_apis,
        force: upgrade.force,
    };
    // whether there was anything to do
    let result = if whole && last {
        provision::converge::apply(&ctx, &opts, &run.skip_phases, &snapshot, confirm)
            .await
            .map(|c| c.upgraded || c.summary.changes > 0)
    } else {
        apply::apply(&ctx, &opts, &snapshot, confirm)
            .await
            .map(|plan| !plan.nothing_to_do())
    };
    ctx.close().await;
    match result {
        Ok(pending) if run.dry_run => Ok(pending),
        Ok(true) if !(whole && last) => {
            println!("the cluster runs Kubernetes {to}");
            Ok(true)
        }
        Ok(pending) => Ok(pending),
        // a plan for machines says "error" (1) rather than "changes pending" (2)
        Err(Stop::Refused) if run.detailed_exitcode => Err(EXIT_PHASE_FAILED),
        Err(Stop::Refused) => Err(EXIT_BAD_INPUT),
        Err(Stop::NotConfirmed) => Err(EXIT_BAD_INPUT),
        Err(Stop::Failed) => {
            eprintln!(
                "the run stopped; fix what is named above and run the same command again: it continues where it stopped"
            );
            Err(EXIT_PHASE_FAILED)
        }
        Err(Stop::Error(e)) => Err(fail_with(EXIT_PHASE_FAILED)(e)),
    }
}

/// A private directory of this run for unpacked files, removed by the caller.
fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "provision-restore-{}-{}",
        std::process::id(),
        provision::snapshot::stamp()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `name` in the inventory's directory.
fn beside_inventory(run: &RunArgs, name: &str) -> std::path::PathBuf {
    run.inventory
        .as_ref()
        .and_then(|i| i.parent())
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// `provision kubeconfig`: the admin's or a person's kubeconfig, printed or merged.
async fn kubeconfig(verbose: bool, format: Format, args: KubeconfigArgs) -> Result<(), u8> {
    use provision::kubeconfig as kc;
    let cluster = load_for(&args.run)?;
    let person = args.user.map(|name| kc::Person {
        name,
        groups: args.group,
        days: args.days,
    });
    let name = args
        .context
        .unwrap_or_else(|| kc::default_name(&cluster, person.as_ref()));
    let merge_path = match args.merge {
        Some(None) => Some(kc::default_merge_path().map_err(fail_with(EXIT_BAD_INPUT))?),
        Some(Some(p)) => Some(p),
        None => None,
    };
    let ctx = command_context(verbose, format, &args.run, cluster).await?;
    let text = match &person {
        Some(p) => kc::for_person(&ctx, p).await,
        None => kc::admin(&ctx).await,
    };
    ctx.close().await;
    let text = text.map_err(fail_with(EXIT_PHASE_FAILED))?;
    match merge_path {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => {
            let said = kc::merge_into(&path, &text, &name, args.force, args.run.dry_run)
                .map_err(fail_with(EXIT_PHASE_FAILED))?;
            println!("{said}");
            Ok(())
        }
    }
}

fn fail_with(code: u8) -> impl Fn(String) -> u8 {
    move |e| {
        eprintln!("error: {e}");
        code
    }
}

fn load_for(run: &RunArgs) -> Result<Cluster, u8> {
    let Some(file) = &run.inventory else {
        eprintln!("error: no inventory: pass -i FILE (examples in inventories/)");
        return Err(EXIT_BAD_INPUT);
    };
    load(file)
}

fn load(file: &Path) -> Result<Cluster, u8> {
    let loaded = inventory::load(file).map_err(|p| {
        eprintln!("{p}");
        EXIT_BAD_INPUT
    })?;
    let (cluster, problems) = cluster::resolve(&loaded).map_err(|p| {
        for w in p.warnings() {
            eprintln!("{w}");
        }
        eprintln!("{p}");
        EXIT_BAD_INPUT
    })?;
    for w in problems.warnings() {
        eprintln!("{w}");
    }
    Ok(cluster)
}

/// The hosts `reset` acts on: those named (they leave a cluster that stays), or all of them.
/// Control planes may leave one by one while another stays (the seed is chosen among those that
/// stay), but not all of them while nodes stay: nothing would be left to join through.
fn reset_hosts(cluster: &Cluster, names: &[String]) -> Result<Vec<Host>, u8> {
    if names.is_empty() {
        return Ok(cluster.hosts.clone());
    }
    let hosts = named_hosts(cluster, names)?;
    let stays = |h: &&Host| !hosts.iter().any(|n| n.name == h.name);
    let staying: Vec<&Host> = cluster.hosts.iter().filter(stays).collect();
    if !staying.is_empty() && !staying.iter().any(|h| h.control_plane) {
        let names: Vec<&str> = staying.iter().map(|h| h.name.as_str()).collect();
        eprintln!(
            "error: every control plane would leave while other nodes stay ({}): the cluster would have no API. Reset the whole cluster (no --hosts), or keep a control plane",
            names.join(", ")
        );
        return Err(EXIT_BAD_INPUT);
    }
    Ok(hosts)
}

/// Asks on a terminal; elsewhere, reset needs --yes.
fn confirmed(hosts: &[Host], cluster_stays: bool) -> bool {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let what = if cluster_stays {
        format!(
            "{} leave the cluster: drained, then Kubernetes, its pods, certificates and (on control planes) the etcd member are removed from them",
            names.join(", ")
        )
    } else {
        format!(
            "the whole cluster goes: Kubernetes, etcd's data, certificates and pods are removed from {}",
            names.join(", ")
        )
    };
    ask(&what)
}

/// Asks on a terminal whether to do `what`; elsewhere the answer is no, and --yes is named.
fn ask(what: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("error: {what}. Pass --yes to go ahead, or --dry-run to see each change first");
        return false;
    }
    eprint!("{what}.\nType yes to go ahead: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == "yes"
}

/// The named hosts of the inventory; an unknown name is an error that lists the hosts.
fn named_hosts(cluster: &Cluster, names: &[String]) -> Result<Vec<Host>, u8> {
    names
        .iter()
        .map(|n| {
            cluster.host(n).cloned().ok_or_else(|| {
                let all: Vec<&str> = cluster.hosts.iter().map(|h| h.name.as_str()).collect();
                eprintln!(
                    "error: --hosts names {n:?}, which is not in the inventory (hosts: {})",
                    all.join(", ")
                );
                EXIT_BAD_INPUT
            })
        })
        .collect()
}

/// "init", or "init phase PATH" when one phase runs.
fn command_name(command: &str, only: Option<&str>) -> String {
    match only {
        Some(p) => format!("{command} phase {p}"),
        None => command.to_string(),
    }
}

/// What a command runs: which phases of which tree, on which hosts.
struct Job<'a> {
    command: String,
    tree: &'a [Phase],
    only: Option<&'a str>,
    scope: Targets,
}

/// The hosts of a command, some known only once the run has chosen its seed control plane.
enum Targets {
    /// `init`: the seed; preflight on every host of the inventory.
    Seed,
    /// `join`: these hosts, or (none named) every host but the seed.
    Joining(Vec<Host>),
    /// `reset`: these hosts; the seed is chosen among the others.
    Leaving(Vec<Host>),
    Fixed(Scope),
}

impl Targets {
    fn leaving(&self) -> Vec<String> {
        match self {
            Targets::Leaving(hosts) => hosts.iter().map(|h| h.name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    fn scope(self, cluster: &Cluster) -> Scope {
        match self {
            Targets::Seed => Scope {
                hosts: cluster.seed_control_plane().cloned().into_iter().collect(),
                preflight_hosts: cluster.hosts.clone(),
            },
            Targets::Joining(named) => {
                let hosts = if named.is_empty() {
                    let seed = cluster.seed_control_plane().map(|h| h.name.as_str());
                    cluster
                        .hosts
                        .iter()
                        .filter(|h| Some(h.name.as_str()) != seed)
                        .cloned()
                        .collect()
                } else {
                    named
                };
                Scope {
                    hosts: hosts.clone(),
                    preflight_hosts: hosts,
                }
            }
            Targets::Leaving(hosts) => Scope {
                hosts,
                preflight_hosts: Vec::new(),
            },
            Targets::Fixed(scope) => scope,
        }
    }
}

/// The context of a command that runs no phase tree: nobody leaves, nothing is renewed.
async fn command_context(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    cluster: Cluster,
) -> Result<Ctx, u8> {
    context(verbose, format, run, cluster, Default::default(), &[]).await
}

/// The run's context, its seed control plane chosen among those not `leaving`.
async fn context(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    cluster: Cluster,
    renew: std::collections::BTreeSet<String>,
    leaving: &[String],
) -> Result<Ctx, u8> {
    ssh::trace_commands(verbose);
    let policy = if run.accept_new_host_keys {
        ssh::HostKeyPolicy::AcceptNew
    } else {
        ssh::HostKeyPolicy::Strict
    };
    // the admin kubeconfig goes beside the inventory, named after the cluster
    let local_kubeconfig = run.inventory.as_ref().map(|i| {
        i.parent()
            .unwrap_or_else(|| Path::new("."))
            .join(format!("{}-admin.conf", cluster.name))
    });
    let options = Options {
        dry_run: run.dry_run,
        concurrency: run.concurrency,
        ignore_preflight: run.ignore_preflight_errors.clone(),
        renew,
        local_kubeconfig,
        lock_file: run
            .inventory
            .as_deref()
            .map(provision::bundle::lock::path_for),
    };
    let mut ctx = Ctx::new(
        Arc::new(cluster),
        options,
        policy,
        Reporter::new(format, verbose, run.dry_run),
    );
    if let Err(e) = provision::settle::settle(&mut ctx, leaving).await {
        eprintln!("error: {e}");
        ctx.close().await;
        return Err(EXIT_PHASE_FAILED);
    }
    Ok(ctx)
}

async fn execute(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    cluster: Cluster,
    job: Job<'_>,
) -> Result<(), u8> {
    execute_with(verbose, format, run, cluster, job, Default::default()).await
}

async fn execute_with(
    verbose: bool,
    format: Format,
    run: &RunArgs,
    cluster: Cluster,
    job: Job<'_>,
    renew: std::collections::BTreeSet<String>,
) -> Result<(), u8> {
    let Job {
        command,
        tree,
        only,
        scope,
    } = job;
    let command = command.as_str();
    let selected = phases::select(tree, only, &run.skip_phases).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_BAD_INPUT
    })?;
    let ctx = context(verbose, format, run, cluster, renew, &scope.leaving()).await?;
    let scope = scope.scope(&ctx.cluster);
    let summary = phases::run(&ctx, command, &selected, &scope).await;
    ctx.out.summary(&summary);
    let failed = summary.failed_phase.is_some();
    ctx.close().await;
    if failed {
        Err(EXIT_PHASE_FAILED)
    } else if run.dry_run && run.detailed_exitcode && summary.changes > 0 {
        Err(EXIT_CHANGES_PENDING)
    } else {
        Ok(())
    }
}

fn print_tree(command: &str, tree: &[Phase]) {
    println!("{command}:");
    for (path, phase) in phases::paths(tree) {
        let depth = path.matches('/').count();
        println!(
            "  {:indent$}{:<20} {}",
            "",
            phase.name,
            phase.summary,
            indent = depth * 2
        );
    }
}

fn print_cluster(c: &Cluster, format: Format) {
    if format == Format::Json {
        match serde_json::to_string_pretty(c) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
        return;
    }
    println!("cluster {} (Kubernetes {})", c.name, c.version);
    println!("  API endpoint     {}", c.endpoint.url());
    if let Some(v) = &c.endpoint.vip {
        println!(
            "                   a VIP (keepalived, VRRP router id {}); nodes reach the API servers at {} (haproxy)",
            v.router_id,
            c.node_api_url()
        );
    }
    println!(
        "  pod subnet       {} (a /{} per node)",
        c.pod_subnet, c.node_cidr_mask_size
    );
    println!("  service subnet   {}", c.service_subnet);
    println!("  API service IP   {}", c.api_service_ip);
    println!("  DNS service IP   {} ({})", c.dns_service_ip, c.dns_domain);
    println!("  runtime          {:?} {:?}", c.runtime, c.runtime_classes);
    println!("  CNI              {:?}", c.cni);
    println!("  bundle           {:?}", c.bundle);
    println!("  hosts:");
    for h in &c.hosts {
        println!(
            "    {:<12} {:<16} {:<22} pods {:<16} ssh {}@{}:{}{}",
            h.name,
            h.address,
            h.roles().join(","),
            h.pod_cidr.to_string(),
            h.ssh.user,
            h.ssh.address,
            h.ssh.port,
            if h.ssh.sudo { " (sudo)" } else { "" }
        );
    }
}
