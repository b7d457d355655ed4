//! The `troupe` binary: `serve` runs a node, `migrate` migrates its database.

mod app;
mod attachments;
mod auth;
mod config;
mod db;
mod gateway;
mod inspect;
mod notifications;
mod stores;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troupe_actors::node::{self, NodeConfig, NodeMsg};

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "troupe", version, about = "A clustered chat server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no configuration: the embedded default, one process, zero setup).
    Serve(ConfigArgs),
    /// Run a node that joins a running cluster through `--seed`.
    Join(JoinArgs),
    /// Run the database migrations and exit (only the database is touched:
    /// Kafka and Redis need not be up).
    Migrate(MigrateArgs),
    /// Print the live actor tree of a running node or cluster (GET /admin/actors).
    Inspect(inspect::InspectArgs),
    /// Check or print the configuration a node would run with.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Exit 0 if the configuration (file, TROUPE_* variables, flags) is valid,
    /// else 1 with the same one-line error a node would stop with.
    Check(ConfigArgs),
    /// Print every key with its value and its source (default, file, env, flag), secrets redacted.
    Show(ConfigArgs),
}

#[derive(Args)]
struct JoinArgs {
    /// A member of the cluster: `host:port` of its cluster listener (repeatable).
    #[arg(long, required = true)]
    seed: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct MigrateArgs {
    /// A TOML configuration file (the format of cluster.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the embedded default keeps its data (the SQLite file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl MigrateArgs {
    fn load(self) -> Result<Config, config::ConfigError> {
        Config::load(
            self.config.as_deref(),
            Overrides {
                data_dir: self.data_dir,
                ..Overrides::default()
            },
        )
    }
}

#[derive(Args)]
struct ConfigArgs {
    /// A TOML configuration file (the format of cluster.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// HTTP and WebSocket listen address.
    #[arg(long)]
    listen: Option<String>,
    /// Where the embedded default keeps its data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This node's name.
    #[arg(long)]
    node_name: Option<String>,
    /// The cluster listener, `ip:port` (`cluster.listen`).
    #[arg(long)]
    cluster_listen: Option<String>,
}

impl ConfigArgs {
    fn load(self) -> Result<Config, config::ConfigError> {
        self.load_with_seeds(None)
    }

    fn load_with_seeds(self, seeds: Option<Vec<String>>) -> Result<Config, config::ConfigError> {
        Config::load(
            self.config.as_deref(),
            Overrides {
                listen: self.listen,
                data_dir: self.data_dir,
                node_name: self.node_name,
                cluster_listen: self.cluster_listen,
                seeds,
            },
        )
    }
}

/// The default log filter: troupe at info; the drivers only when something
/// is wrong (rskafka alone logs ~10 lines a second while a broker is down,
/// and the node already says so once).
const DEFAULT_LOG_FILTER: &str =
    "info,rskafka=error,sqlx=warn,sea_orm=warn,fred=warn,ractor_cluster=warn";

/// ractor opens an info span per actor (`Actor`, its id and name) that lives
/// as long as the actor: the log subscriber keeps ~300 bytes per session for
/// spans no troupe log line needs. Off unless `RUST_LOG` names ractor itself.
const ACTOR_SPANS_OFF: &str = "ractor=warn";

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let names_ractor = std::env::var("RUST_LOG").is_ok_and(|v| {
        v.split(',').any(|d| {
            d.trim() == "ractor"
                || d.trim().starts_with("ractor=")
                || d.trim().starts_with("ractor::")
        })
    });
    let filter = if names_ractor {
        filter
    } else {
        filter.add_directive(ACTOR_SPANS_OFF.parse().expect("a valid directive"))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, never into files or `docker logs`.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args.load()?).await,
            Command::Join(args) => {
                let config = args.config.load_with_seeds(Some(args.seed))?;
                if !config.clustered() {
                    anyhow::bail!("troupe join needs cluster.listen (config file, TROUPE_CLUSTER__LISTEN or --cluster-listen)");
                }
                serve(config).await
            }
            Command::Migrate(args) => migrate(args.load()?).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Config(ConfigCommand::Check(args)) => {
                let config = args.load()?;
                println!(
                    "ok: node {} on {} ({})",
                    config.node.name,
                    config.listen,
                    if config.clustered() { "clustered" } else { "alone" }
                );
                Ok(())
            }
            Command::Config(ConfigCommand::Show(args)) => {
                print!("{}", args.load()?.show()?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// One line: what failed and why. Causes whose text an outer error already
/// quotes (`database X unreachable: <cause>`) are not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    stores::migrate_database(&config).await?;
    tracing::info!(database = %db::redact(&config.database_url()), "migrated");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if !config.ignored_env.is_empty() {
        tracing::warn!(
            variables = %config.ignored_env.join(","),
            "ignoring TROUPE_* variables that name no config section (Kubernetes sets \
             TROUPE_SERVICE_HOST and the like for a Service named troupe)"
        );
    }
    if let Some(ms) = config.session.resume_grace_ms {
        tracing::warn!(
            resume_grace_ms = ms,
            "session.resume_grace_ms is deprecated and ignored: a session goes live at the \
             connection's first frame (a `resume` replays first), or at once with ?live=1"
        );
    }
    let mut opened = stores::open(&config).await?;
    let attachments = attachments::Attachments::open(&config, opened.sql.clone())
        .await
        .context("cannot open the attachment store")?;
    opened.stores.attachments = Arc::new(attachments.clone());
    // Offline notifications watch history writes (docs/notifications.md).
    opened.stores = notifications::start(
        &config.notifications,
        &config.node.name,
        opened.sql.clone(),
        opened.stores,
    );
    let accounts = auth::Accounts::new(
        opened.stores.clone(),
        config.auth.scrypt_log_n,
        config.auth.max_concurrent_hashes,
        config.token_ttl(),
        config.limits.clone(),
    )?;
    // Bound before the actors start: a taken port fails the start at once,
    // and the admin endpoints can say where this node listens.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let node_config = NodeConfig {
        node: config.node.name.clone(),
        http_addr: listener.local_addr()?.to_string(),
        stores: opened.stores.clone(),
        limits: config.limits.clone(),
        rate_limits: config.rate_limits.clone(),
        tuning: config.room_tuning(),
        admins: config.admin.users.clone(),
        resume_ttl: config.token_ttl(),
        mesh: config.mesh(),
    };
    let node::RunningNode {
        node,
        refs,
        mut stopped,
    } = node::start(node_config)
        .await
        .map_err(|e| anyhow::anyhow!("the node's actors failed to start: {e}"))?;
    let app = app::App::new(app::AppParts {
        config: Arc::new(config.clone()),
        stores: opened.stores,
        probes: opened.probes,
        accounts,
        refs,
        shutdown: CancellationToken::new(),
        connections: TaskTracker::new(),
        attachments,
        sql: opened.sql,
    });
    tracing::info!(
        node = %config.node.name,
        listen = %config.listen,
        database = %db::redact(&config.database_url()),
        cluster = ?config.cluster.listen,
        "troupe serving"
    );
    let server = tokio::spawn(gateway::serve(listener, app.clone()));
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = &mut stopped => {
            // A core actor crashed: exit so that a process supervisor restarts
            // the node, which restores every room from its checkpoint and log.
            app.shutdown.cancel();
            anyhow::bail!("the node's actor tree stopped unexpectedly; see the log above");
        }
    }
    if config.clustered() {
        // Rooms go to their new owners while the connections are still open.
        tracing::info!("leaving the cluster: handing rooms off");
        let _ = troupe_actors::ask(&node, |reply| NodeMsg::Leave { reply }).await;
    }
    tracing::info!("shutting down: closing connections (1012), flushing rooms");
    app.shutdown.cancel();
    let _ = troupe_actors::ask(&node, |reply| NodeMsg::Shutdown { reply }).await;
    app.connections.close();
    if tokio::time::timeout(Duration::from_secs(10), app.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
        Err(_) => tracing::warn!("the listener did not stop in time"),
        _ => {}
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops the node");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
