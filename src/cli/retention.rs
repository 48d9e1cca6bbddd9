//! `regate retention plan | apply | history`: retention through the admin
//! API of a running regate ([`crate::retention::admin_api`]), as `regate gc`
//! does it (`--admin URL`, or `server.admin_listen` of the configuration).
//!
//! `plan` prints a table per repository (or the JSON); `apply` shows the
//! plan, asks unless `--yes`, deletes a few repositories per call (each call
//! deletes only what the confirmed plan named and the server's fresh plan
//! still holds at the same digest) with a progress bar, prints the results,
//! and exits 1 if any deletion failed (or the question was not answered yes).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::admin_client::{exit, runtime, AdminTarget, Api, ClientError};
use crate::retention::plan::age;

#[derive(Args, Debug)]
pub struct RetentionArgs {
    #[command(subcommand)]
    pub action: RetentionAction,
    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(Subcommand, Debug)]
pub enum RetentionAction {
    /// What a run would delete and keep, and why; changes nothing.
    Plan {
        /// Print the plan as JSON: {"delete": [...], "keep": [...], "skipped": [...], "warnings": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        scope: Scope,
    },
    /// Delete what the plan says (asks first unless --yes).
    Apply {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        scope: Scope,
    },
    /// Past runs.
    History {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Scope {
    /// Delete even in repositories where more than max_delete_fraction of the tags would go.
    #[arg(long)]
    force: bool,
    /// Only this repository (repeat for more).
    #[arg(long = "repository")]
    repositories: Vec<String>,
}

impl Scope {
    fn body(&self, dry_run: bool) -> Value {
        let mut b = json!({"dry_run": dry_run, "force": self.force});
        if !self.repositories.is_empty() {
            b["repositories"] = json!(self.repositories);
        }
        b
    }
}

pub fn run(args: RetentionArgs) -> ExitCode {
    exit((|| {
        let api = Api::new(&args.target)?;
        runtime()?.block_on(async {
            match args.action {
                RetentionAction::Plan { json, scope } => {
                    let v = plan(&api, &scope).await?;
                    if json {
                        let only = json!({"delete": v["delete"], "keep": v["keep"], "skipped": v["skipped"], "warnings": v["warnings"]});
                        println!("{}", serde_json::to_string_pretty(&only).unwrap_or_default());
                    } else {
                        print!("{}", describe_plan(&v, now()));
                    }
                    Ok(true)
                }
                RetentionAction::Apply { yes, scope } => apply(&api, &scope, yes).await,
                RetentionAction::History { json } => {
                    let v = api.call(reqwest::Method::GET, "/admin/retention", None).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        print!("{}", describe_history(&v));
                    }
                    Ok(true)
                }
            }
        })
    })())
}

async fn plan(api: &Api, scope: &Scope) -> Result<Value, ClientError> {
    api.call(
        reqwest::Method::POST,
        "/admin/retention",
        Some(scope.body(true)),
    )
    .await
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// The plan for a person: per repository, what goes and what stays, why.
pub fn describe_plan(v: &Value, now: i64) -> String {
    let mut repos: BTreeMap<&str, (Vec<&Value>, Vec<&Value>)> = BTreeMap::new();
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let (delete, keep) = (list("delete"), list("keep"));
    for d in &delete {
        repos
            .entry(d["repository"].as_str().unwrap_or("?"))
            .or_default()
            .0
            .push(d);
    }
    for k in &keep {
        repos
            .entry(k["repository"].as_str().unwrap_or("?"))
            .or_default()
            .1
            .push(k);
    }
    let ago = |x: &Value| {
        x.as_i64()
            .map(|t| format!("{} ago", age(now - t)))
            .unwrap_or_else(|| "-".into())
    };
    let mut s = String::new();
    for (repo, (del, kept)) in &repos {
        s.push_str(&format!(
            "{repo}: {} to delete, {} kept\n",
            del.len(),
            kept.len()
        ));
        let mut rows = vec![[
            "",
            "TAG",
            "DIGEST",
            "PUSHED",
            "DATE FROM",
            "LAST PULL",
            "RULE",
            "WHY",
        ]
        .map(str::to_owned)];
        for (what, items) in [("delete", del), ("keep", kept)] {
            for x in items.iter() {
                rows.push([
                    what.to_owned(),
                    x["tag"].as_str().unwrap_or("").to_owned(),
                    short(x["digest"].as_str().unwrap_or("")).to_owned(),
                    ago(&x["pushed_at"]),
                    x["date_source"].as_str().unwrap_or("-").to_owned(),
                    ago(&x["last_pull"]),
                    x["rule"].as_str().unwrap_or("").to_owned(),
                    x["reason"].as_str().unwrap_or("").to_owned(),
                ]);
            }
        }
        s.push_str(&table(&rows, "  "));
    }
    for k in v["skipped"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "SKIPPED {}: {} of its {} tags would go, more than max_delete_fraction {} (--force to delete anyway)\n",
            k["repository"].as_str().unwrap_or("?"),
            k["would_delete"],
            k["tags"],
            k["max_delete_fraction"]
        ));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("")));
    }
    s.push_str(&format!(
        "{} tags to delete in {} repositories\n",
        delete.len(),
        repos.values().filter(|(d, _)| !d.is_empty()).count()
    ));
    s
}

fn table<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let mut width = [0; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut line = indent.to_owned();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:w$}  ", w = width[i]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Deletions per admin call (whole repositories; one repository may exceed it).
const CALL_SIZE: usize = 500;

async fn apply(api: &Api, scope: &Scope, yes: bool) -> Result<bool, ClientError> {
    let v = plan(api, scope).await?;
    print!("{}", describe_plan(&v, now()));
    let mut by_repo: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for d in v["delete"].as_array().into_iter().flatten() {
        by_repo
            .entry(d["repository"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(json!({"repository": d["repository"], "tag": d["tag"], "digest": d["digest"]}));
    }
    let total: usize = by_repo.values().map(Vec::len).sum();
    if total == 0 {
        println!("nothing to delete");
        return Ok(true);
    }
    if !yes && !confirm(&format!("Delete these {total} tags? [y/N] "))? {
        eprintln!("not confirmed; nothing was deleted");
        return Ok(false);
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} deleted {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = vec![["REPOSITORY", "TAG", "RESULT"].map(str::to_owned)];
    let mut failed = 0;
    // Whole repositories per call, about CALL_SIZE deletions each.
    let mut calls: Vec<(Vec<String>, Vec<Value>)> = Vec::new();
    for (repo, expect) in by_repo {
        match calls.last_mut() {
            Some((repos, items)) if items.len() + expect.len() <= CALL_SIZE => {
                repos.push(repo);
                items.extend(expect);
            }
            _ => calls.push((vec![repo], expect)),
        }
    }
    let field = |x: &Value, k: &str| x[k].as_str().unwrap_or("").to_owned();
    for (repos, expect) in calls {
        bar.set_message(repos.join(", "));
        let n = expect.len() as u64;
        let body = json!({"force": scope.force, "repositories": repos, "expect": expect});
        let r = api
            .call(reqwest::Method::POST, "/admin/retention", Some(body))
            .await;
        bar.inc(n);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                for x in &expect {
                    failed += 1;
                    rows.push([
                        field(x, "repository"),
                        field(x, "tag"),
                        format!("FAILED {e}"),
                    ]);
                }
                continue;
            }
        };
        let mut results: Vec<&Value> = r["results"].as_array().into_iter().flatten().collect();
        results.sort_by_key(|o| (field(o, "repository"), field(o, "tag")));
        for o in results {
            let result = match o["status"].as_str() {
                Some("deleted") => "deleted".to_owned(),
                _ => {
                    failed += 1;
                    format!("FAILED {}", o["error"].as_str().unwrap_or("?"))
                }
            };
            rows.push([field(o, "repository"), field(o, "tag"), result]);
        }
        for x in r["not_planned"].as_array().into_iter().flatten() {
            rows.push([
                field(x, "repository"),
                field(x, "tag"),
                "kept: no longer in the plan".into(),
            ]);
        }
    }
    bar.finish_and_clear();
    print!("{}", table(&rows, ""));
    if failed > 0 {
        eprintln!("{failed} of {total} deletions failed");
        return Ok(false);
    }
    println!(
        "restore a tag with `regate tags restore REGISTRY/REPO:TAG` (until GC takes its manifest)"
    );
    Ok(true)
}

fn confirm(question: &str) -> Result<bool, ClientError> {
    use std::io::Write as _;
    print!("{question}");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Failed(format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn describe_history(v: &Value) -> String {
    let mut rows = vec![[
        "ID",
        "STARTED",
        "ACCOUNT",
        "PLANNED",
        "DELETED",
        "FAILED",
        "SKIPPED REPOS",
    ]
    .map(str::to_owned)];
    for r in v["runs"].as_array().into_iter().flatten() {
        let started = r["started_at"]
            .as_i64()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        rows.push([
            r["id"].to_string(),
            started,
            r["account"].as_str().unwrap_or("").to_owned(),
            r["planned"].to_string(),
            r["deleted"].to_string(),
            r["failed"].to_string(),
            r["skipped"].to_string(),
        ]);
    }
    table(&rows, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_reads_as_a_table_per_repository() {
        let now = 100 * 86400;
        let v = json!({
            "delete": [{"repository": "ci/app", "tag": "old-1", "digest": "sha256:0123456789abcdef", "rule": "retention[0] (ci/*)", "reason": "pushed 90d ago, older than 30d", "pushed_at": 10 * 86400, "date_source": "storage", "last_pull": null}],
            "keep": [
                {"repository": "ci/app", "tag": "v1", "digest": "sha256:fedcba9876543210", "rule": "retention[0] (ci/*)", "reason": "matches keep_tags \"^v\"", "pushed_at": 99 * 86400, "date_source": "regate", "last_pull": now - 3600},
                {"repository": "ci/big", "tag": "a3", "digest": "sha256:aa", "rule": "max_delete_fraction", "reason": "repository skipped", "pushed_at": null, "date_source": null, "last_pull": null}
            ],
            "skipped": [{"repository": "ci/big", "tags": 5, "would_delete": 3, "max_delete_fraction": 0.5}],
            "warnings": ["retention[1] (x/*) matches no repository; check its repository glob"]
        });
        let text = describe_plan(&v, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..6],
            [
                "ci/app: 1 to delete, 1 kept",
                "          TAG    DIGEST        PUSHED   DATE FROM  LAST PULL  RULE                 WHY",
                "  delete  old-1  0123456789ab  90d ago  storage    -          retention[0] (ci/*)  pushed 90d ago, older than 30d",
                "  keep    v1     fedcba987654  1d ago   regate     1h ago     retention[0] (ci/*)  matches keep_tags \"^v\"",
                "ci/big: 0 to delete, 1 kept",
                "        TAG  DIGEST  PUSHED  DATE FROM  LAST PULL  RULE                 WHY",
            ],
            "{text}"
        );
        assert!(text.contains("SKIPPED ci/big: 3 of its 5 tags would go, more than max_delete_fraction 0.5 (--force to delete anyway)"), "{text}");
        assert!(
            text.contains("warning: retention[1] (x/*) matches no repository"),
            "{text}"
        );
        assert!(
            text.ends_with("1 tags to delete in 1 repositories\n"),
            "{text}"
        );
    }
}
