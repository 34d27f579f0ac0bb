//! `ordinal-node`: the Ordinal replica daemon and its admin commands.
//!
//! This first part generates clusters (`ordinal-node testnet`). Running a replica (`run`,
//! `local`) arrives with the QUIC transport and the RocksDB store.

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
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
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
            out,
        } => {
            let spec = testnet::TestnetSpec {
                replicas,
                protocol: match protocol {
                    ProtocolArg::Pbft => ProtocolKind::Pbft,
                    ProtocolArg::Linear => ProtocolKind::Linear,
                },
                host,
                base_port,
                docker,
                request_auth: match request_auth {
                    AuthArg::Signed => RequestAuth::Signed,
                    AuthArg::Unsigned => RequestAuth::Unsigned,
                },
            };
            let client = testnet::generate(&spec, &out)?;
            println!("cluster: {}", client.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordinal-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
