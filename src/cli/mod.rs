//! The `regate` command line: argument parsing and the exit codes.
//!
//! Owns the subcommands and how their results reach the operator: 0 on
//! success, 2 for a configuration or usage problem, 1 for anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{defaults, Settings};

mod connect;
mod fsck;
mod next_steps;
mod reindex;
mod retention;
mod tags;

#[derive(Parser, Debug)]
#[command(
    name = "regate",
    version,
    about = "A safe gate in front of a Docker registry: TLS, auth, tag delete, GC without fear"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (and the managed registry, if configured).
    Serve {
        #[arg(long, short, default_value = defaults::CONFIG_FILE, env = "REGATE_CONFIG")]
        config: PathBuf,
        /// Once listening, write the bound addresses as JSON to this file
        /// (for scripts and tests that use port 0).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Validate the configuration; prints every problem and exits 2 if any.
    CheckConfig {
        #[arg(long, short, default_value = defaults::CONFIG_FILE, env = "REGATE_CONFIG")]
        config: PathBuf,
    },
    /// Manage tags of a running regate over HTTPS: rm, ls, restore, deleted.
    #[command(subcommand)]
    Tags(tags::TagsCommand),
    /// Check a registry through its API: dangling tags, missing blobs and
    /// children, unreadable manifests, tags left on a tag-delete dummy.
    /// Exit 0 clean, 1 broken, 2 could not check.
    Fsck(fsck::FsckArgs),
    /// Rebuild the referrers index from the registry (storage or API).
    Reindex {
        #[arg(long, short, default_value = defaults::CONFIG_FILE, env = "REGATE_CONFIG")]
        config: PathBuf,
    },
    /// Create a local CA and a server certificate (ca.crt, server.crt, server.key).
    Cert {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A DNS name or IP address for the certificate; repeat for more.
        /// `localhost` also brings 127.0.0.1 and ::1.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Garbage collection through the admin API of a running regate.
    Gc(crate::admin_client::GcArgs),
    /// Retention through the admin API: plan, apply, history.
    Retention(retention::RetentionArgs),
    /// Close (drain) or open the write gate for maintenance.
    Maintenance(crate::admin_client::MaintenanceArgs),
    /// Manage the htpasswd file (bcrypt).
    Passwd {
        #[command(subcommand)]
        command: crate::auth::cli::PasswdCommand,
    },
    /// Write a new token signing key (and its public key as FILE.pub).
    Keygen(crate::auth::cli::KeygenArgs),
    /// Print a token for a user and scopes (for scripts and tests).
    Token(crate::auth::cli::TokenArgs),
}

/// Sets up `tracing`: `REGATE_LOG` wins over `log.level`. Colours only
/// when stderr is a terminal (never in a file or a journal).
pub fn init_logging(level: &str, json: bool) {
    use std::io::IsTerminal as _;
    let filter = std::env::var("REGATE_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, ready_file } => serve(config, ready_file),
        Command::Gc(args) => crate::admin_client::gc(args),
        Command::Maintenance(args) => crate::admin_client::maintenance(args),
        Command::Retention(args) => retention::run(args),
        Command::CheckConfig { config } => match Settings::load(&config) {
            Ok(settings) => {
                for w in &settings.warnings {
                    eprintln!("{}: warning: {}: {}", config.display(), w.key, w.message);
                }
                println!("{}: configuration is valid", config.display());
                for note in settings.notes() {
                    println!("  note: {note}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Tags(cmd) => tags::run(cmd),
        Command::Fsck(args) => fsck::run(args),
        Command::Reindex { config } => reindex::run(&config),
        Command::Cert { dir, hosts } => match crate::certs::generate(&dir, &hosts) {
            Ok(files) => {
                println!(
                    "wrote {}, {}, {} and {}",
                    files.ca_cert.display(),
                    files.ca_key.display(),
                    files.server_cert.display(),
                    files.server_key.display()
                );
                println!(
                    "clients trust {} (docker: /etc/docker/certs.d/HOST:PORT/ca.crt)",
                    files.ca_cert.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("regate cert: {e}");
                ExitCode::from(2)
            }
        },
        Command::Passwd { command } => crate::auth::cli::passwd(command),
        Command::Keygen(args) => crate::auth::cli::keygen(args),
        Command::Token(args) => crate::auth::cli::token(args),
    }
}

fn serve(config: PathBuf, ready_file: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings.log.level, settings.log.json);
    for w in &settings.warnings {
        tracing::warn!(file = %config.display(), key = %w.key, "{}", w.message);
    }
    for note in settings.notes() {
        tracing::info!("{note}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let shown = settings.clone();
        let running = match crate::server::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("regate: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(path) = ready_file {
            if let Err(e) = write_ready_file(&path, &running) {
                eprintln!("regate: --ready-file {}: {e}", path.display());
                running.shutdown().await;
                return ExitCode::FAILURE;
            }
        }
        println!("{}", next_steps::text(&shown, &running));
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections, letting requests finish");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn write_ready_file(
    path: &std::path::Path,
    running: &crate::server::RunningServer,
) -> std::io::Result<()> {
    let info = serde_json::json!({
        "pid": std::process::id(),
        "tls": running.tls_addr.to_string(),
        "plain": running.plain_addr.map(|a| a.to_string()),
        "admin": running.admin_addr.map(|a| a.to_string()),
        "upstream": running.upstream_origin,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
    std::fs::rename(tmp, path)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
    }
}
