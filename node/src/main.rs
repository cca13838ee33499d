//! `pharos`: the command-line entry point. Parses flags, loads the
//! configuration, sets up logging, runs a node until SIGINT/SIGTERM, and
//! exits non-zero with a readable message on any startup error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pharos_node::config::duration::parse_duration_ms;
use pharos_node::config::{Config, PromDuration};
use pharos_node::server::{self, NodeOptions};

/// Pharos: a Prometheus-compatible time-series database.
#[derive(Debug, Parser)]
#[command(
    name = "pharos",
    version,
    about = "Pharos: a Prometheus-compatible time-series database",
    long_about = None
)]
struct Cli {
    /// Log level or filter (`error`, `warn`, `info`, `debug`, `trace`, or a
    /// tracing filter such as `pharos_node=debug`). `RUST_LOG` overrides it.
    #[arg(long = "log.level", global = true, default_value = "info")]
    log_level: String,

    /// Log format: `text` (human readable) or `json` (one object per line).
    #[arg(long = "log.format", global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node: storage under --data-dir, the Prometheus HTTP API,
    /// the remote-write receiver and remote read on --listen.
    Server(ServerArgs),
    /// Run a local multi-node cluster (not available yet: exits with an
    /// error; use `pharos server` for a single node).
    Cluster(ClusterArgs),
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Address to serve HTTP on [default: 127.0.0.1:9090, or pharos.listen
    /// from the config file].
    #[arg(long, alias = "web.listen-address", value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Directory for the WAL and blocks [default: ./data, or
    /// pharos.data_dir from the config file].
    #[arg(long = "data-dir", alias = "storage.tsdb.path", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Delete data older than this (a Prometheus duration such as `15d`;
    /// `0s` keeps everything) [default: 15d, or
    /// pharos.tsdb.retention_time from the config file].
    #[arg(long = "storage.tsdb.retention.time", value_name = "DURATION", value_parser = parse_retention)]
    retention_time: Option<PromDuration>,

    /// Configuration file: a Prometheus configuration file, optionally with
    /// a `pharos:` section for Pharos's own settings.
    #[arg(long, alias = "config.file", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Web configuration file in Prometheus's format (TLS, basic auth)
    /// [default: pharos.web.config_file from the config file].
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,

    /// Serve the admin API (/api/v1/admin/*).
    #[arg(long = "web.enable-admin-api")]
    enable_admin_api: bool,

    /// Disable the remote-write receiver (/api/v1/write).
    #[arg(long = "no-remote-write-receiver")]
    no_remote_write_receiver: bool,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
}

fn parse_retention(s: &str) -> Result<PromDuration, String> {
    parse_duration_ms(s).map(PromDuration)
}

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, &cli.log_format);
    match cli.command {
        Command::Cluster(args) => {
            eprintln!(
                "error: clustering is not available yet (requested {} nodes): this build runs \
                 single nodes only. Start one with `pharos server` (see `pharos server --help`).",
                args.nodes
            );
            ExitCode::from(2)
        }
        Command::Server(args) => match run_server(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let mut flags = BTreeMap::new();
    let (mut config, config_file) = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", p.display()))?;
            let cfg = Config::parse(&text, p)?;
            flags.insert("config.file".to_string(), p.display().to_string());
            (cfg, Some((p.clone(), text)))
        }
        None => (Config::default(), None),
    };
    if let Some(l) = args.listen {
        config.pharos.listen = l;
    }
    if let Some(d) = &args.data_dir {
        config.pharos.data_dir = d.clone();
    }
    if let Some(r) = args.retention_time {
        config.pharos.tsdb.retention_time = r;
    }
    if let Some(w) = &args.web_config_file {
        config.pharos.web.config_file = Some(w.clone());
    }
    if args.enable_admin_api {
        config.pharos.web.enable_admin_api = true;
    }
    if args.no_remote_write_receiver {
        config.pharos.remote_write_receiver.enabled = false;
    }
    let p = &config.pharos;
    flags.insert("listen".into(), p.listen.to_string());
    flags.insert("data-dir".into(), p.data_dir.display().to_string());
    flags.insert(
        "storage.tsdb.retention.time".into(),
        p.tsdb.retention_time.to_string(),
    );
    flags.insert(
        "web.config.file".into(),
        p.web
            .config_file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_default(),
    );
    flags.insert(
        "web.enable-admin-api".into(),
        p.web.enable_admin_api.to_string(),
    );
    flags.insert(
        "web.enable-remote-write-receiver".into(),
        p.remote_write_receiver.enabled.to_string(),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pharos-worker")
        .build()?;
    rt.block_on(async move {
        let node = server::start(NodeOptions {
            config,
            config_file,
            flags,
        })
        .await?;
        wait_for_signal().await?;
        tracing::info!("signal received");
        node.shutdown().await?;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
