//! `regate tags rm | ls | restore | deleted`: tag management against a
//! running regate over HTTPS, as a user would do it from any machine.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use futures_util::StreamExt;
use reqwest::Method;

use super::connect::Connect;
use crate::client::{ImageRef, RegistryClient, Scheme};
use crate::registry_api::ACCEPT_MANIFESTS;

#[derive(Subcommand, Debug)]
pub enum TagsCommand {
    /// Remove tags (and nothing else): REGISTRY/REPO:TAG [TAG...]
    Rm {
        reference: String,
        more_tags: Vec<String>,
        /// Deletes in parallel.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        #[command(flatten)]
        connect: Connect,
    },
    /// List tags with digest, creation date and size: REGISTRY/REPO
    Ls {
        reference: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Point a removed tag at its old digest again: REGISTRY/REPO:TAG
    Restore {
        reference: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Show removed tags of a repository (what `restore` can bring back): REGISTRY/REPO
    Deleted {
        reference: String,
        #[command(flatten)]
        connect: Connect,
    },
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("regate tags: {msg}");
    ExitCode::from(2)
}

fn client_for(r: &ImageRef, c: &Connect) -> Result<RegistryClient, String> {
    c.client(Scheme::Https, &r.registry)
}

pub fn run(cmd: TagsCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async move {
        match cmd {
            TagsCommand::Rm {
                reference,
                more_tags,
                jobs,
                connect,
            } => rm(&reference, more_tags, jobs, &connect).await,
            TagsCommand::Ls { reference, connect } => ls(&reference, &connect).await,
            TagsCommand::Restore { reference, connect } => restore(&reference, &connect).await,
            TagsCommand::Deleted { reference, connect } => deleted(&reference, &connect).await,
        }
    })
}

async fn rm(reference: &str, more: Vec<String>, jobs: usize, connect: &Connect) -> ExitCode {
    let r = match ImageRef::parse(reference) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let Some(first) = r.tag.clone() else {
        return usage("name the tag to remove: REGISTRY/REPO:TAG");
    };
    let mut tags = vec![first];
    for t in more {
        if crate::route::Tag::parse(&t).is_err() {
            return usage(format!("{t:?} is not a valid tag"));
        }
        tags.push(t);
    }
    let client = match client_for(&r, connect) {
        Ok(c) => Arc::new(c),
        Err(e) => return usage(e),
    };
    let bar = indicatif::ProgressBar::new(tags.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} removed {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let scope = format!("repository:{}:delete", r.repository);
    let results = remove_tags(&client, &r.repository, &scope, tags, jobs, &bar).await;
    bar.finish_and_clear();
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let width = results
        .iter()
        .map(|(t, _)| t.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!("{:width$}  RESULT", "TAG");
    let mut failed = 0;
    for (tag, res) in &results {
        match res {
            Ok(()) => println!("{tag:width$}  removed"),
            Err(e) => {
                failed += 1;
                println!("{tag:width$}  FAILED  {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} tags not removed", results.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Tags per batch request, and batch requests in flight: a batch shares one
/// dummy manifest per family, so bigger batches cost the registry less.
const BATCH: usize = 100;
const BATCHES_IN_FLIGHT: usize = 2;

type TagResult = (String, Result<(), String>);

/// Removes `tags` in batches (`POST /v2/<repo>/_regate/delete`); against a
/// server without that endpoint (a registry, an older regate), one `DELETE`
/// per tag, `jobs` at a time.
async fn remove_tags(
    client: &Arc<RegistryClient>,
    repo: &str,
    scope: &str,
    tags: Vec<String>,
    jobs: usize,
    bar: &indicatif::ProgressBar,
) -> Vec<TagResult> {
    if tags.len() > 1 {
        let chunks: Vec<Vec<String>> = tags.chunks(BATCH).map(<[String]>::to_vec).collect();
        let batches: Vec<Option<Vec<TagResult>>> = futures_util::stream::iter(chunks)
            .map(|chunk| async move {
                let r = remove_batch(client, repo, scope, &chunk).await;
                if r.is_some() {
                    bar.inc(chunk.len() as u64);
                }
                r
            })
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .collect()
            .await;
        if batches.iter().all(Option::is_some) {
            return batches.into_iter().flatten().flatten().collect();
        }
    }
    futures_util::stream::iter(tags)
        .map(|tag| async move {
            let res = match client
                .send(
                    Method::DELETE,
                    &format!("/v2/{repo}/manifests/{tag}"),
                    scope,
                    None,
                )
                .await
            {
                Ok(resp) if resp.status().as_u16() == 202 => Ok(()),
                Ok(resp) => Err(client.error_text(resp).await),
                Err(e) => Err(e.to_string()),
            };
            bar.inc(1);
            (tag, res)
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await
}

/// One batch; `None` when the server has no batch endpoint.
async fn remove_batch(
    client: &RegistryClient,
    repo: &str,
    scope: &str,
    tags: &[String],
) -> Option<Vec<TagResult>> {
    let body = serde_json::json!({ "tags": tags });
    let path = format!("/v2/{repo}/_regate/delete");
    let resp = match client
        .send_json(Method::POST, &path, scope, None, Some(&body))
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            return Some(
                tags.iter()
                    .map(|t| (t.clone(), Err(e.to_string())))
                    .collect(),
            )
        }
    };
    match resp.status().as_u16() {
        200 => {}
        404 | 405 => return None,
        _ => {
            let msg = client.error_text(resp).await;
            return Some(tags.iter().map(|t| (t.clone(), Err(msg.clone()))).collect());
        }
    }
    let v: serde_json::Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => {
            return Some(
                tags.iter()
                    .map(|t| (t.clone(), Err(format!("unreadable answer: {e}"))))
                    .collect(),
            )
        }
    };
    let results = v["results"].as_array().cloned().unwrap_or_default();
    Some(
        results
            .iter()
            .map(|r| {
                let tag = r["tag"].as_str().unwrap_or_default().to_owned();
                let outcome = if r["status"] == 202 {
                    Ok(())
                } else {
                    Err(format!(
                        "{} {}: {}",
                        r["status"],
                        r["error"]["code"].as_str().unwrap_or("UNKNOWN"),
                        r["error"]["message"].as_str().unwrap_or("failed")
                    ))
                };
                (tag, outcome)
            })
            .collect(),
    )
}

async fn get_json(
    client: &RegistryClient,
    path: &str,
    scope: &str,
    accept: Option<&str>,
) -> Result<(serde_json::Value, String, String), String> {
    let resp = client
        .send(Method::GET, path, scope, accept)
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(client.error_text(resp).await);
    }
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (ct, digest) = (h("content-type"), h("docker-content-digest"));
    let v = resp.json().await.map_err(|e| e.to_string())?;
    Ok((v, ct, digest))
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

async fn describe(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
) -> Result<(String, String, String), String> {
    let scope = format!("repository:{repo}:pull");
    let (m, _content_type, digest) = get_json(
        client,
        &format!("/v2/{repo}/manifests/{tag}"),
        &scope,
        Some(ACCEPT_MANIFESTS),
    )
    .await?;
    if let Some(children) = m["manifests"].as_array() {
        let size: u64 = children.iter().filter_map(|c| c["size"].as_u64()).sum();
        return Ok((
            digest,
            format!("index of {}", children.len()),
            format!("{} (manifests)", human(size)),
        ));
    }
    let size: u64 = m["config"]["size"].as_u64().unwrap_or(0)
        + m["layers"]
            .as_array()
            .map(|l| l.iter().filter_map(|x| x["size"].as_u64()).sum())
            .unwrap_or(0);
    let created = match m["config"]["digest"].as_str() {
        Some(cd) => get_json(client, &format!("/v2/{repo}/blobs/{cd}"), &scope, None)
            .await
            .ok()
            .and_then(|(c, _, _)| c["created"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into()),
        None => "-".into(),
    };
    Ok((digest, created, human(size)))
}

async fn ls(reference: &str, connect: &Connect) -> ExitCode {
    let r = match ImageRef::parse(reference) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let client = match client_for(&r, connect) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let scope = format!("repository:{}:pull", r.repository);
    let tags = match get_json(
        &client,
        &format!("/v2/{}/tags/list", r.repository),
        &scope,
        None,
    )
    .await
    {
        Ok((v, _, _)) => v["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        Err(e) => {
            eprintln!("regate tags ls: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows: Vec<_> = futures_util::stream::iter(tags)
        .map(|t| {
            let client = &client;
            let repo = r.repository.clone();
            async move {
                let d = describe(client, &repo, &t).await;
                (t, d)
            }
        })
        .buffered(8)
        .collect()
        .await;
    let width = rows.iter().map(|(t, _)| t.len()).max().unwrap_or(3).max(3);
    // Sizes right-aligned, so their digits line up.
    let size_width = rows
        .iter()
        .filter_map(|(_, d)| d.as_ref().ok().map(|(_, _, size)| size.to_string().len()))
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:71}  {:24}  {:>size_width$}",
        "TAG", "DIGEST", "CREATED", "SIZE"
    );
    let mut failed = false;
    for (tag, d) in rows {
        match d {
            Ok((digest, created, size)) => {
                let size = size.to_string();
                println!("{tag:width$}  {digest:71}  {created:24}  {size:>size_width$}")
            }
            Err(e) => {
                failed = true;
                println!("{tag:width$}  error: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn restore(reference: &str, connect: &Connect) -> ExitCode {
    let r = match ImageRef::parse(reference) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let Some(tag) = r.tag.clone() else {
        return usage("name the tag to restore: REGISTRY/REPO:TAG");
    };
    let client = match client_for(&r, connect) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let scope = format!("repository:{}:pull,push", r.repository);
    match client
        .send(
            Method::POST,
            &format!("/v2/{}/_regate/restore/{tag}", r.repository),
            &scope,
            None,
        )
        .await
    {
        Ok(resp) if resp.status().is_success() => {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            println!(
                "{}:{tag} restored to {}",
                r.repository,
                v["digest"].as_str().unwrap_or("?")
            );
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!("regate tags restore: {}", client.error_text(resp).await);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("regate tags restore: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn deleted(reference: &str, connect: &Connect) -> ExitCode {
    let r = match ImageRef::parse(reference) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let client = match client_for(&r, connect) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let scope = format!("repository:{}:pull", r.repository);
    match get_json(
        &client,
        &format!("/v2/{}/_regate/deleted", r.repository),
        &scope,
        None,
    )
    .await
    {
        Ok((v, _, _)) => {
            println!(
                "{:24}  {:71}  {:20}  {:12}  RESTORED",
                "TAG", "DIGEST", "DELETED", "BY"
            );
            for d in v["deleted"].as_array().into_iter().flatten() {
                let when = |k: &str| {
                    d[k].as_i64()
                        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "{:24}  {:71}  {:20}  {:12}  {}",
                    d["tag"].as_str().unwrap_or(""),
                    d["digest"].as_str().unwrap_or(""),
                    when("deleted_at"),
                    d["account"].as_str().unwrap_or(""),
                    when("restored_at")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regate tags deleted: {e}");
            ExitCode::FAILURE
        }
    }
}
