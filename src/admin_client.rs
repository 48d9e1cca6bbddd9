//! The operator's side of the admin API: `regate gc run|status` and
//! `regate maintenance on|off|status` talk to a running regate's admin
//! listener (and `regate retention`, in `cli::retention`, through [`Api`]) (`--admin URL`, or `server.admin_listen` of the configuration).
//!
//! Owns the subcommands' arguments, the HTTP calls and what they print; exit
//! codes follow `cli`: 0 done, 1 failed (a GC run that failed included), 2
//! usage or configuration. Its HTTP client comes from `client::http_client`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::config::{defaults, Settings};

/// Where the admin listener is.
#[derive(Args, Debug)]
pub struct AdminTarget {
    /// The admin listener, e.g. http://127.0.0.1:5444 (default: the
    /// configuration's server.admin_listen).
    #[arg(long, env = "REGATE_ADMIN_URL", global = true)]
    pub admin: Option<String>,
    #[arg(long, short, default_value = defaults::CONFIG_FILE, env = "REGATE_CONFIG", global = true)]
    pub config: PathBuf,
    /// An account with the `admin` right, when auth is on (password from
    /// --password-stdin or REGATE_PASSWORD).
    #[arg(long, short, env = "REGATE_USERNAME", global = true)]
    pub user: Option<String>,
    /// Read the password from standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(subcommand)]
    pub action: GcAction,
    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(Subcommand, Debug)]
pub enum GcAction {
    /// Start a garbage collection run.
    Run {
        /// Report what would be deleted; the gate stays open.
        #[arg(long)]
        dry_run: bool,
        /// Also delete manifests no tag reaches (multi-arch safe).
        #[arg(long)]
        untagged: bool,
        /// Follow the run until it ends; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
    },
    /// The gate, the run in progress and the recent history.
    Status {
        /// Print the admin API's JSON as it is (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    pub action: MaintenanceAction,
    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(Subcommand, Debug)]
pub enum MaintenanceAction {
    /// Drain and close the write gate (reads go on).
    On {
        #[arg(long, default_value = "maintenance by hand")]
        reason: String,
    },
    /// Open the write gate.
    Off,
    /// Show the gate.
    Status,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl AdminTarget {
    fn credentials(&self) -> Result<Option<(String, String)>, ClientError> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let password = if self.password_stdin {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| ClientError::Usage(format!("reading the password from stdin: {e}")))?;
            s.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            std::env::var("REGATE_PASSWORD").map_err(|_| {
                ClientError::Usage(format!(
                    "--user {user} needs a password: pass --password-stdin or set REGATE_PASSWORD"
                ))
            })?
        };
        Ok(Some((user.clone(), password)))
    }

    fn base(&self) -> Result<String, ClientError> {
        if let Some(u) = &self.admin {
            return Ok(u.trim_end_matches('/').to_owned());
        }
        let settings = Settings::load(&self.config)
            .map_err(|e| ClientError::Usage(format!("{e}\n(or pass --admin http://HOST:PORT)")))?;
        let addr = settings.server.admin_listen.ok_or_else(|| {
            ClientError::Usage(format!(
                "{}: server.admin_listen is not set; the admin API needs it (or pass --admin URL)",
                self.config.display()
            ))
        })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        Ok(format!("http://{host}:{}", addr.port()))
    }
}

pub(crate) struct Api {
    base: String,
    client: reqwest::Client,
    credentials: Option<(String, String)>,
}

impl Api {
    pub(crate) fn new(target: &AdminTarget) -> Result<Self, ClientError> {
        let client = crate::client::http_client(Vec::new())
            .map_err(|e| ClientError::Failed(e.to_string()))?;
        Ok(Api {
            base: target.base()?,
            client,
            credentials: target.credentials()?,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method, &url);
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            ClientError::Failed(format!("cannot reach the admin API at {url}: {e}"))
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            let msg = v["errors"][0]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            let hint = match status {
                reqwest::StatusCode::UNAUTHORIZED => {
                    "\n(auth is on: pass --user ACCOUNT with --password-stdin or REGATE_PASSWORD)"
                }
                reqwest::StatusCode::FORBIDDEN => {
                    "\n(the account needs a rule granting \"admin\" on repository \"*\")"
                }
                _ => "",
            };
            Err(ClientError::Failed(format!("{status}: {msg}{hint}")))
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Failed(format!("cannot start the async runtime: {e}")))
}

pub(crate) fn exit(r: Result<bool, ClientError>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(ClientError::Usage(m)) => {
            eprintln!("regate: {m}");
            ExitCode::from(2)
        }
        Err(ClientError::Failed(m)) => {
            eprintln!("regate: {m}");
            ExitCode::FAILURE
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn describe_run(run: &Value) -> String {
    let ms = |k: &str| {
        run[k]
            .as_i64()
            .map(|v| format!("{:.1}s", v as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let n = |k: &str| {
        run[k]
            .as_i64()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let freed = match (run["bytes_before"].as_i64(), run["bytes_after"].as_i64()) {
        (Some(b), Some(a)) => format!("{} bytes", b - a),
        _ => "-".into(),
    };
    format!(
        "run {} ({}{}): {} [{}], attempts {}, drain {}, gate closed {}, untagged walk {} ({} repositories, {} tags, {} revisions), GC {}, exit {}, blobs deleted {}, manifests deleted {}, freed {}{}",
        n("id"),
        run["trigger"].as_str().unwrap_or("-"),
        if run["dry_run"].as_bool() == Some(true) { ", dry run" } else { "" },
        run["status"].as_str().unwrap_or("-"),
        run["phase"].as_str().unwrap_or("-"),
        n("attempts"),
        ms("drain_ms"),
        ms("closed_ms"),
        ms("untagged_ms"),
        n("repositories"),
        n("tags"),
        n("revisions"),
        ms("gc_ms"),
        n("exit_code"),
        n("blobs_deleted"),
        n("manifests_deleted"),
        freed,
        run["error"]
            .as_str()
            .map(|e| format!("\n  error: {e}"))
            .unwrap_or_default(),
    )
}

/// `GET /admin/gc` for a person: the gate, the run under way and the last
/// runs, one line each (the JSON itself is `curl ADMIN/admin/gc`).
fn describe_status(v: &Value) -> String {
    let gate = &v["gate"];
    let since = gate["since"]
        .as_i64()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let mut s = format!(
        "write gate: {}{since}{} (closed writes: {}; writes in flight {}, held {})",
        gate["state"].as_str().unwrap_or("-"),
        gate["reason"]
            .as_str()
            .map(|r| format!(", {r}"))
            .unwrap_or_default(),
        gate["closed_writes"].as_str().unwrap_or("-"),
        gate["writes_in_flight"],
        gate["writes_held"],
    );
    match v["running"].as_object() {
        Some(_) => s.push_str(&format!("\nrunning: {}", describe_run(&v["running"]))),
        None => s.push_str("\nno GC running"),
    }
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        s.push_str(&format!("\nlast {} runs:", history.len().min(10)));
        for run in history.iter().take(10) {
            s.push_str(&format!("\n  {}", describe_run(run)));
        }
    }
    s
}

/// `regate gc ...`
pub fn gc(args: GcArgs) -> ExitCode {
    exit((|| {
        let api = Api::new(&args.target)?;
        runtime()?.block_on(async {
            match args.action {
                GcAction::Status { json } => {
                    let v = api.call(reqwest::Method::GET, "/admin/gc", None).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        println!("{}", describe_status(&v));
                    }
                    Ok(true)
                }
                GcAction::Run {
                    dry_run,
                    untagged,
                    wait,
                } => {
                    let v = api
                        .call(
                            reqwest::Method::POST,
                            "/admin/gc",
                            Some(serde_json::json!({"dry_run": dry_run, "untagged": untagged})),
                        )
                        .await?;
                    let id = v["id"].as_i64().unwrap_or_default();
                    println!("GC run {id} started");
                    if !wait {
                        return Ok(true);
                    }
                    follow(&api, id).await
                }
            }
        })
    })())
}

/// Prints each phase change of run `id` until it ends; true if it succeeded.
async fn follow(api: &Api, id: i64) -> Result<bool, ClientError> {
    let mut last_phase = String::new();
    loop {
        let run = api
            .call(reqwest::Method::GET, &format!("/admin/gc/{id}"), None)
            .await?;
        let phase = run["phase"].as_str().unwrap_or("").to_owned();
        let status = run["status"].as_str().unwrap_or("");
        if phase != last_phase {
            println!("  phase: {phase}");
            last_phase = phase;
        }
        if status != "running" {
            println!("{}", describe_run(&run));
            if let Some(report) = run.get("untagged_report").filter(|r| !r.is_null()) {
                println!("untagged: {}", pretty(report));
            }
            return Ok(status == "succeeded");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `regate maintenance ...`
pub fn maintenance(args: MaintenanceArgs) -> ExitCode {
    exit((|| {
        let api = Api::new(&args.target)?;
        runtime()?.block_on(async {
            let v = match args.action {
                MaintenanceAction::On { reason } => {
                    api.call(
                        reqwest::Method::PUT,
                        "/admin/maintenance",
                        Some(serde_json::json!({"reason": reason})),
                    )
                    .await?
                }
                MaintenanceAction::Off => {
                    api.call(reqwest::Method::DELETE, "/admin/maintenance", None)
                        .await?
                }
                MaintenanceAction::Status => {
                    api.call(reqwest::Method::GET, "/admin/maintenance", None)
                        .await?
                }
            };
            let gate = &v["gate"];
            println!(
                "write gate: {}{}",
                gate["state"].as_str().unwrap_or("?"),
                gate["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            if let Some(d) = v.get("drain").filter(|d| !d.is_null()) {
                println!(
                    "drained in {} ms{}",
                    d["waited_ms"],
                    if d["timed_out"].as_bool() == Some(true) {
                        " (drain_timeout reached with writes still under way)"
                    } else {
                        ""
                    }
                );
            }
            Ok(true)
        })
    })())
}
