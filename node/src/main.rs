//! `ordinal-node`: the Ordinal replica daemon and its admin commands.
//!
//! `testnet` generates a cluster's keys and configuration, `run` starts one replica, and
//! `local` runs a whole cluster on loopback in one process.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ordinal_consensus::{ProtocolKind, RequestAuth};
use ordinal_node::testnet;

#[derive(Parser, Debug)]
#[command(name = "ordinal-node", version, about = "The Ordinal replica daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    Pbft,
    Linear,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AuthArg {
    Signed,
    Unsigned,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate keys and configuration for an N-replica cluster.
    Testnet {
        /// Number of replicas.
        #[arg(long)]
        replicas: usize,
        /// Agreement protocol.
        #[arg(long, value_enum, default_value_t = ProtocolArg::Pbft)]
        protocol: ProtocolArg,
        /// Host the replicas listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Replica i uses UDP base-port + i for QUIC and TCP base-port + 100 + i for metrics.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Address replicas by their compose service names (node-i).
        #[arg(long)]
        docker: bool,
        /// How clients authenticate requests.
        #[arg(long, value_enum, default_value_t = AuthArg::Signed)]
        request_auth: AuthArg,
        /// Voting weights by replica id, comma-separated (default: all 1). The vector must be
        /// admissible: the f heaviest replicas hold less than a third of the total.
        #[arg(long, value_delimiter = ',')]
        weights: Vec<u64>,
        /// Let weights change through the ordered log within MIN,MAX (writes the
        /// cluster's `[weights]` table).
        #[arg(long, value_delimiter = ',', value_name = "MIN,MAX")]
        weight_bounds: Vec<u64>,
        /// With --weight-bounds: each replica orders its latency measurements every this many
        /// stable checkpoints and the weights follow them (0: explicit changes only).
        #[arg(long, default_value_t = 0)]
        weight_reports_every: u64,
        /// Also generate this many spare replicas (node-N.., outside the membership) and an
        /// operator key (`operator.key`) that can add them with `ordinal-node membership join`.
        #[arg(long, default_value_t = 0)]
        spares: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// If OUT already holds a cluster, keep it and succeed (the compose testnet's init
        /// service runs this at every start; keys are generated only the first time).
        #[arg(long)]
        keep_existing: bool,
    },
    /// Add or remove a replica through the ordered log (needs the cluster's operator key).
    Membership {
        #[command(subcommand)]
        action: MembershipAction,
    },
    /// Run one replica until SIGINT or SIGTERM.
    Run {
        /// The replica's config.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an N-replica cluster on loopback in this process (no Docker).
    Local {
        /// Number of replicas.
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        /// Agreement protocol.
        #[arg(long, value_enum, default_value_t = ProtocolArg::Pbft)]
        protocol: ProtocolArg,
        /// Where the cluster lives: generated there if the directory holds no `client.toml`,
        /// resumed (same keys and stores) if it does. Default: a fresh temporary directory,
        /// removed at exit.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        duration: Option<u64>,
        /// Replica i uses UDP base-port + i and TCP base-port + 100 + i.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// How clients authenticate requests (unsigned: by their TLS connection only).
        #[arg(long, value_enum, default_value_t = AuthArg::Unsigned)]
        request_auth: AuthArg,
        /// Durability: `always` syncs before every receipt.
        #[arg(long, value_enum, default_value_t = SyncArg::Always)]
        sync: SyncArg,
    },
}

#[derive(Subcommand, Debug)]
enum MembershipAction {
    /// A new replica joins: described by its config.toml (`--node-config`), or by
    /// `--public-key` and `--address`. Start it (it catches up by state transfer); it votes
    /// from the epoch this schedules.
    Join {
        /// The cluster's client.toml.
        #[arg(long)]
        cluster: PathBuf,
        /// The operator's secret key file.
        #[arg(long)]
        operator_key: PathBuf,
        /// The joining replica's config.toml.
        #[arg(long, conflicts_with_all = ["public_key", "address"])]
        node_config: Option<PathBuf>,
        /// The joining replica's public key (hex).
        #[arg(long, requires = "address")]
        public_key: Option<String>,
        /// Where peers reach the joining replica (host:port).
        #[arg(long, requires = "public_key")]
        address: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// A member leaves; stop it once the epoch this schedules is in force.
    Leave {
        /// The cluster's client.toml.
        #[arg(long)]
        cluster: PathBuf,
        /// The operator's secret key file.
        #[arg(long)]
        operator_key: PathBuf,
        /// The leaving replica's id.
        #[arg(long)]
        replica: u16,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

async fn change_membership(action: MembershipAction) -> anyhow::Result<()> {
    use ordinal_node::membership::{submit, Change};
    let (cluster, operator_key, change, timeout) = match action {
        MembershipAction::Join {
            cluster,
            operator_key,
            node_config,
            public_key,
            address,
            timeout,
        } => {
            let change = match (node_config, public_key, address) {
                (Some(path), _, _) => Change::join_from_config(&path)?,
                (None, Some(key), Some(address)) => Change::Join {
                    public_key: key.parse().map_err(|e| anyhow::anyhow!("--public-key: {e}"))?,
                    address,
                    expected_id: None,
                },
                _ => anyhow::bail!("give --node-config, or --public-key and --address"),
            };
            (cluster, operator_key, change, timeout)
        }
        MembershipAction::Leave {
            cluster,
            operator_key,
            replica,
            timeout,
        } => (
            cluster,
            operator_key,
            Change::Leave(ordinal_crypto::ReplicaId(replica)),
            timeout,
        ),
    };
    let outcome = submit(
        &cluster,
        &operator_key,
        change,
        std::time::Duration::from_secs(timeout),
    )
    .await?;
    if let Some(id) = outcome.joined {
        println!("joined: replica {id}");
    }
    println!(
        "scheduled: epoch {} from seq {} (ordered at {}), members {:?}",
        outcome.epoch, outcome.start, outcome.ordered_at, outcome.members
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SyncArg {
    Always,
    Never,
}

fn protocol_kind(protocol: ProtocolArg) -> ProtocolKind {
    match protocol {
        ProtocolArg::Pbft => ProtocolKind::Pbft,
        ProtocolArg::Linear => ProtocolKind::Linear,
    }
}

fn auth(arg: AuthArg) -> RequestAuth {
    match arg {
        AuthArg::Signed => RequestAuth::Signed,
        AuthArg::Unsigned => RequestAuth::Unsigned,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn run_replica(config: PathBuf) -> anyhow::Result<()> {
    let loaded = ordinal_node::config::LoadedConfig::load(&config)?;
    let mut replica = ordinal_node::service::start(&loaded).await?;
    tokio::select! {
        signal = ordinal_node::service::shutdown_signal() => {
            signal?;
            tracing::info!("signal received; stopping");
            replica.stop().await
        }
        error = replica.failed() => Err(error),
    }
}

async fn run_local(
    spec: testnet::TestnetSpec,
    dir: Option<PathBuf>,
    duration: Option<u64>,
    sync: SyncArg,
) -> anyhow::Result<()> {
    let (dir, _temporary) = match dir {
        Some(dir) => (dir, None),
        None => {
            let temporary = tempfile::Builder::new().prefix("ordinal-local-").tempdir()?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let sync = match sync {
        SyncArg::Always => ordinal_node::config::SyncPolicy::Always,
        SyncArg::Never => ordinal_node::config::SyncPolicy::Never,
    };
    let (client, mut replicas) = ordinal_node::local::start(&spec, &dir, sync).await?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "cluster: {}", client.display())?;
        stdout.flush()?;
    }
    eprintln!(
        "ordinal-node: {} replicas running ({} on 127.0.0.1:{}..); metrics on ports {}..; Ctrl-C stops",
        spec.replicas,
        spec.protocol,
        spec.base_port,
        spec.base_port as usize + 100
    );
    let waited = ordinal_node::local::wait(&mut replicas, duration.map(std::time::Duration::from_secs)).await;
    let stopped = ordinal_node::local::stop(replicas).await;
    waited.and(stopped)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Testnet {
            replicas,
            protocol,
            host,
            base_port,
            docker,
            request_auth,
            weights,
            weight_bounds,
            weight_reports_every,
            spares,
            out,
            keep_existing,
        } => {
            let spec = testnet::TestnetSpec {
                replicas,
                protocol: protocol_kind(protocol),
                host,
                base_port,
                docker,
                request_auth: auth(request_auth),
                weights,
                weight_changes: match weight_bounds.as_slice() {
                    [] => None,
                    [min, max] => Some(ordinal_consensus::WeightsConfig {
                        min: *min,
                        max: *max,
                        reports_every: weight_reports_every,
                        checkpoint_interval: ordinal_consensus::ProtocolConfig::default().checkpoint_interval,
                        log_window: ordinal_consensus::ProtocolConfig::default().log_window,
                    }),
                    _ => anyhow::bail!("--weight-bounds takes MIN,MAX"),
                },
                spares,
            };
            let existing = out.join("client.toml");
            let client = if keep_existing && existing.exists() {
                eprintln!(
                    "ordinal-node: {} already holds a cluster; keeping it",
                    out.display()
                );
                existing
            } else {
                testnet::generate(&spec, &out)?
            };
            println!("cluster: {}", client.display());
            Ok(())
        }
        Command::Run { config } => runtime()?.block_on(run_replica(config)),
        Command::Membership { action } => runtime()?.block_on(change_membership(action)),
        Command::Local {
            replicas,
            protocol,
            dir,
            duration,
            base_port,
            request_auth,
            sync,
        } => {
            let mut spec = ordinal_node::local::spec(replicas, protocol_kind(protocol), base_port);
            spec.request_auth = auth(request_auth);
            runtime()?.block_on(run_local(spec, dir, duration, sync))
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORDINAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordinal-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
