//! `pharos`: the command-line entry point. Parses flags, loads the
//! configuration, sets up logging, runs a node until SIGINT/SIGTERM
//! (reloading the config on SIGHUP), and exits non-zero with a readable
//! message on any startup error. Also `cluster` (a local multi-process
//! cluster, and `cluster status`), and the `promtool`-like `check rules`,
//! `check config` and `test rules` subcommands.

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
    /// the remote-write receiver and remote read on --listen, and the
    /// scraping, rules and Alertmanager notifications of --config.
    Server(Box<ServerArgs>),
    /// Run a local cluster: --nodes `pharos server` processes on loopback,
    /// node i with data in DIR/node-i, HTTP on port P+i-1 and gRPC on
    /// P+1000+i-1 (DIR = --data-dir, P = --base-port). Ctrl-C or SIGTERM
    /// stops them all; a node that exits stops the others (nothing is
    /// restarted). `pharos cluster status` shows a running cluster.
    Cluster(ClusterArgs),
    /// Validate configuration or rule files, as `promtool check` does
    /// (exit code 0 when valid, 1 otherwise).
    #[command(subcommand)]
    Check(CheckCommand),
    /// Run rule unit tests, as `promtool test rules` does (exit code 0 when
    /// every test passes, 1 otherwise).
    #[command(subcommand)]
    Test(TestCommand),
}

#[derive(Debug, Subcommand)]
enum CheckCommand {
    /// Check rule files: syntax, PromQL, templates, duplicate rules.
    Rules {
        /// Rule files to check.
        #[arg(required = true, value_name = "RULE_FILE")]
        files: Vec<PathBuf>,
    },
    /// Check configuration files, and the rule files each one names.
    Config {
        /// Configuration files to check.
        #[arg(required = true, value_name = "CONFIG_FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TestCommand {
    /// Run the unit tests of rule test files (promtool's format:
    /// `rule_files`, `evaluation_interval`, `tests` with `input_series`,
    /// `alert_rule_test` and `promql_expr_test`).
    Rules {
        /// Test files to run.
        #[arg(required = true, value_name = "TEST_FILE")]
        files: Vec<PathBuf>,
    },
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

    /// Serve POST /-/reload, which re-reads the config file (SIGHUP always
    /// does) [default: pharos.web.enable_lifecycle from the config file].
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,

    /// The URL this node is reached under, used in alerts' generatorURL
    /// [default: pharos.web.external_url from the config file, else
    /// http://<listen address>].
    #[arg(long = "web.external-url", value_name = "URL")]
    external_url: Option<String>,

    /// A pending alert keeps at least this much of its `for` wait after a
    /// restart or leader change [default: pharos.rules.for_grace_period,
    /// else 10m].
    #[arg(long = "rules.alert.for-grace-period", value_name = "DURATION", value_parser = parse_retention)]
    for_grace_period: Option<PromDuration>,

    /// Alert state older than this is not restored [default:
    /// pharos.rules.for_outage_tolerance, else 1h].
    #[arg(long = "rules.alert.for-outage-tolerance", value_name = "DURATION", value_parser = parse_retention)]
    for_outage_tolerance: Option<PromDuration>,

    /// How often firing alerts are re-sent to Alertmanager [default:
    /// pharos.rules.resend_delay, else 1m].
    #[arg(long = "rules.alert.resend-delay", value_name = "DURATION", value_parser = parse_retention)]
    resend_delay: Option<PromDuration>,

    /// Run as node ID of a cluster (a positive integer, unique and stable
    /// across restarts) [default: pharos.cluster.node_id; unset: a single
    /// node].
    #[arg(long = "node-id", value_name = "ID")]
    node_id: Option<u64>,

    /// Where the cluster's internal gRPC service listens [default:
    /// pharos.cluster.grpc_listen, else 127.0.0.1:10090].
    #[arg(long = "grpc-listen", value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,

    /// The host:port other nodes reach this node's gRPC service at
    /// [default: pharos.cluster.advertise, else --grpc-listen].
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,

    /// gRPC addresses of cluster members to join through, comma separated
    /// (ignored once this node is a member) [default: pharos.cluster.join;
    /// empty: bootstrap a new cluster].
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    join: Option<Vec<String>>,

    /// Create the shard map once this many nodes are members [default:
    /// pharos.cluster.expect_nodes, else 1].
    #[arg(long = "expect-nodes", value_name = "N")]
    expect_nodes: Option<usize>,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ClusterArgs {
    #[command(subcommand)]
    command: Option<ClusterCommand>,

    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,

    /// Parent directory of the nodes' data directories and logs.
    #[arg(long = "data-dir", value_name = "DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// HTTP port of node 1; node i serves HTTP on PORT+i-1 and gRPC on
    /// PORT+1000+i-1.
    #[arg(long = "base-port", value_name = "PORT", default_value_t = 9090)]
    base_port: u16,

    /// Configuration file passed to every node (scrape jobs, rules, …).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Print a running cluster's nodes and shard summary.
    Status {
        /// Any node's HTTP URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        url: String,
    },
}

fn parse_retention(s: &str) -> Result<PromDuration, String> {
    parse_duration_ms(s).map(PromDuration)
}

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `pharos cluster` sends logs to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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
        Command::Cluster(ClusterArgs {
            command: Some(ClusterCommand::Status { url }),
            ..
        }) => match pharos_node::cluster::launcher::status_text(&url) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Cluster(args) => {
            let opts = pharos_node::cluster::launcher::LaunchOptions {
                nodes: args.nodes,
                data_dir: args.data_dir,
                base_port: args.base_port,
                config: args.config,
                log_level: cli.log_level.clone(),
            };
            match pharos_node::cluster::launcher::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(CheckCommand::Rules { files }) => check_rules(&files),
        Command::Check(CheckCommand::Config { files }) => check_config(&files),
        Command::Test(TestCommand::Rules { files }) => {
            let mut out = std::io::stdout().lock();
            if pharos_alerting::unittest::run(&files, &mut out) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Server(args) => match run_server(*args) {
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
    if args.enable_lifecycle {
        config.pharos.web.enable_lifecycle = true;
    }
    if let Some(u) = &args.external_url {
        config.pharos.web.external_url = Some(u.clone());
    }
    let r = &mut config.pharos.rules;
    if let Some(d) = args.for_grace_period {
        r.for_grace_period = d;
    }
    if let Some(d) = args.for_outage_tolerance {
        r.for_outage_tolerance = d;
    }
    if let Some(d) = args.resend_delay {
        if d.as_millis() == 0 {
            anyhow::bail!("--rules.alert.resend-delay must be positive");
        }
        r.resend_delay = d;
    }
    let c = &mut config.pharos.cluster;
    if let Some(id) = args.node_id {
        c.node_id = Some(id);
    }
    if let Some(a) = args.grpc_listen {
        c.grpc_listen = a;
    }
    if let Some(a) = &args.advertise {
        c.advertise = Some(a.clone());
    }
    if let Some(j) = &args.join {
        c.join = j.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(n) = args.expect_nodes {
        c.expect_nodes = n;
    }
    // Flags may have turned cluster mode on or changed its settings.
    c.validate(
        args.config
            .as_deref()
            .unwrap_or(std::path::Path::new("<flags>")),
    )?;
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
    flags.insert(
        "web.enable-lifecycle".into(),
        p.web.enable_lifecycle.to_string(),
    );
    flags.insert(
        "web.external-url".into(),
        p.web.external_url.clone().unwrap_or_default(),
    );
    flags.insert(
        "rules.alert.for-grace-period".into(),
        p.rules.for_grace_period.to_string(),
    );
    flags.insert(
        "rules.alert.for-outage-tolerance".into(),
        p.rules.for_outage_tolerance.to_string(),
    );
    flags.insert(
        "rules.alert.resend-delay".into(),
        p.rules.resend_delay.to_string(),
    );
    let c = &p.cluster;
    flags.insert(
        "node-id".into(),
        c.node_id.map(|i| i.to_string()).unwrap_or_default(),
    );
    if c.enabled() {
        flags.insert("grpc-listen".into(), c.grpc_listen.to_string());
        flags.insert("advertise".into(), c.advertise_addr());
        flags.insert("join".into(), c.join.join(","));
        flags.insert("expect-nodes".into(), c.expect_nodes.to_string());
    }

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
        wait_for_signal(&node).await?;
        tracing::info!("signal received");
        node.shutdown().await?;
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM; SIGHUP reloads the config file meanwhile
/// (a rejected config is logged and the running one stays).
async fn wait_for_signal(node: &server::RunningNode) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => return Ok(r?),
                _ = term.recv() => return Ok(()),
                _ = hup.recv() => {
                    let svc = std::sync::Arc::clone(&node.state.services);
                    match tokio::task::spawn_blocking(move || svc.reload()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "reloading the configuration on SIGHUP failed; the running configuration stays"),
                        Err(e) => tracing::error!(error = %e, "reload task failed"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = node;
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

/// `pharos check rules`: `promtool check rules` output and exit codes.
fn check_rules(files: &[PathBuf]) -> ExitCode {
    match pharos_alerting::rules::check_rule_files(files) {
        Ok(report) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let _ = report.write(&mut out, &mut err);
            if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `pharos check config`: each file as `promtool check config` checks it —
/// the whole config (scrape jobs, Alertmanagers, the `pharos:` section) —
/// then the rule files it names, relative to its directory.
fn check_config(files: &[PathBuf]) -> ExitCode {
    use std::io::Write as _;
    let mut ok = true;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for f in files {
        let _ = writeln!(out, "Checking {}", f.display());
        let cfg = Config::load(f).and_then(|c| c.alertmanagers(f).map(|_| c));
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(err, "  FAILED: {e}");
                let _ = writeln!(out);
                ok = false;
                continue;
            }
        };
        let base = f.parent().unwrap_or(std::path::Path::new(""));
        let rule_files = match pharos_alerting::rules::expand_globs(&cfg.rule_globs(base)) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "  FAILED: {e}");
                let _ = writeln!(out);
                ok = false;
                continue;
            }
        };
        if !cfg.rule_files.is_empty() {
            let _ = writeln!(out, "  SUCCESS: {} rule files found", rule_files.len());
        }
        let _ = writeln!(
            out,
            " SUCCESS: {} is valid prometheus config file syntax",
            f.display()
        );
        let _ = writeln!(out);
        match pharos_alerting::rules::check_rule_files(&rule_files) {
            Ok(report) => {
                let _ = report.write(&mut out, &mut err);
                ok &= report.success();
            }
            Err(e) => {
                let _ = writeln!(err, "  FAILED: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
