//! The concurrent clients of the soak: pushers, pullers, deleters, the
//! killer, and a monitor that counts finished GC runs. Each runs until
//! `stop` is set; each records what it was told in the [`Ledger`]. They talk
//! to the regate instances of [`Targets`]: one for the one-instance soak,
//! the replicas of a cluster for the cluster soak (each request to one picked
//! at random).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;

use super::images::random_image;
use super::ledger::{Counters, Ledger, TagState};
use super::process::Regate;
use crate::common::images::{absolute, sha256, Image, ACCEPT_ALL};

pub const REPOS: [&str; 3] = ["soak/alpha", "soak/beta", "soak/team/gamma"];

/// The base URLs the clients use, one per regate instance.
#[derive(Clone)]
pub struct Targets(Arc<Vec<String>>);

impl Targets {
    pub fn new(bases: Vec<String>) -> Self {
        assert!(!bases.is_empty(), "no regate to talk to");
        Targets(Arc::new(bases))
    }

    /// The instance for the next request (a push, a pull or a delete goes
    /// through one). With one instance the random numbers are left alone, so
    /// a seed repeats the one-instance soak's choices.
    pub fn pick(&self, rng: &mut impl Rng) -> &str {
        match self.0.len() {
            1 => &self.0[0],
            n => &self.0[rng.gen_range(0..n)],
        }
    }

    /// The `i`th instance, round the list.
    pub fn nth(&self, i: usize) -> &str {
        &self.0[i % self.0.len()]
    }
}

/// What a write came back with.
enum Write {
    Done,
    /// Definitely not done (a refusal).
    Refused(String),
    /// Cut or answered strangely: may or may not have happened.
    Unknown(String),
}

async fn upload(c: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> Result<(), String> {
    let digest = sha256(bytes);
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    if let Ok(r) = c.head(&url).send().await {
        if r.status() == StatusCode::OK {
            return Ok(());
        }
    }
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::ACCEPTED {
        return Err(format!("upload start: {}", r.status()));
    }
    let location = absolute(base, r.headers()["location"].to_str().unwrap());
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("upload finish: {}", r.status()));
    }
    Ok(())
}

async fn put_manifest(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
    img: &Image,
) -> Write {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", &img.media_type)
        .body(img.manifest.clone())
        .send()
        .await;
    match r {
        Ok(r) if r.status() == StatusCode::CREATED => Write::Done,
        // Validation failures and the gate's 503: nothing was written.
        Ok(r) if matches!(r.status().as_u16(), 400 | 404 | 503) => Write::Refused(format!(
            "{} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        )),
        Ok(r) => Write::Unknown(format!("{}", r.status())),
        Err(e) => Write::Unknown(e.to_string()),
    }
}

/// Pushes blobs, children and the manifest by tag.
async fn push(c: &reqwest::Client, base: &str, repo: &str, tag: &str, img: &Image) -> Write {
    for b in img.all_blobs() {
        if let Err(e) = upload(c, base, repo, &b.bytes).await {
            return Write::Refused(e);
        }
    }
    for child in &img.children {
        match put_manifest(c, base, repo, &child.digest, child).await {
            Write::Done => {}
            Write::Refused(e) | Write::Unknown(e) => return Write::Refused(format!("child: {e}")),
        }
    }
    put_manifest(c, base, repo, tag, img).await
}

pub async fn pusher(
    id: usize,
    seed: u64,
    c: reqwest::Client,
    targets: Targets,
    pool: Arc<Vec<Vec<u8>>>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1000 + id as u64));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let repo = REPOS[rng.gen_range(0..REPOS.len())];
        let tag = format!("p{id}-{n}");
        let img = random_image(&mut rng, &format!("soak-{seed}-{id}-{n}"), &pool);
        let base = targets.pick(&mut rng);
        match push(&c, base, repo, &tag, &img).await {
            Write::Done => {
                ledger.set(repo, &tag, TagState::Acked(img.digest.clone()));
                Counters::add(&ledger.counters.pushes_acked);
            }
            Write::Refused(_) => {
                Counters::add(&ledger.counters.pushes_failed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Write::Unknown(_) => {
                ledger.set(repo, &tag, TagState::Uncertain(img.digest.clone()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// How a pull ended.
pub enum Pull {
    Ok,
    /// Not reachable now (regate down, a 5xx): try again later.
    Retry(String),
    /// A 404 for the tag or something it refers to.
    Gone(String),
    /// Bytes that do not match the digest acknowledged or asked for.
    Wrong(String),
}

async fn get_checked(
    c: &reqwest::Client,
    url: &str,
    digest: &str,
    accept: Option<&str>,
) -> Result<Vec<u8>, Pull> {
    let mut req = c.get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.map_err(|e| Pull::Retry(e.to_string()))?;
    match r.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(Pull::Gone(format!("{url}: 404"))),
        s => return Err(Pull::Retry(format!("{url}: {s}"))),
    }
    let bytes = r.bytes().await.map_err(|e| Pull::Retry(e.to_string()))?;
    let got = sha256(&bytes);
    if got != digest {
        return Err(Pull::Wrong(format!("{url}: expected {digest}, got {got}")));
    }
    Ok(bytes.to_vec())
}

/// Pulls `repo:tag` (manifest, children, blobs) and checks every digest.
pub async fn pull(c: &reqwest::Client, base: &str, repo: &str, tag: &str, digest: &str) -> Pull {
    match pull_inner(c, base, repo, tag, digest).await {
        Ok(()) => Pull::Ok,
        Err(p) => p,
    }
}

async fn pull_inner(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    digest: &str,
) -> Result<(), Pull> {
    let bytes = get_checked(
        c,
        &format!("{base}/v2/{repo}/manifests/{tag}"),
        digest,
        Some(ACCEPT_ALL),
    )
    .await?;
    let m: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Pull::Wrong(e.to_string()))?;
    let mut manifests = vec![m];
    while let Some(m) = manifests.pop() {
        for child in m["manifests"].as_array().into_iter().flatten() {
            let d = child["digest"].as_str().unwrap_or_default();
            let b = get_checked(
                c,
                &format!("{base}/v2/{repo}/manifests/{d}"),
                d,
                Some(ACCEPT_ALL),
            )
            .await?;
            manifests.push(serde_json::from_slice(&b).map_err(|e| Pull::Wrong(e.to_string()))?);
        }
        let blobs = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&m["config"]));
        for b in blobs {
            if let Some(d) = b["digest"].as_str() {
                get_checked(c, &format!("{base}/v2/{repo}/blobs/{d}"), d, None).await?;
            }
        }
    }
    Ok(())
}

pub async fn puller(
    id: usize,
    seed: u64,
    c: reqwest::Client,
    targets: Targets,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2000 + id as u64));
    while !stop.load(Ordering::Relaxed) {
        let Some((repo, tag, digest)) = ledger.pick_acked(|n| rng.gen_range(0..n)) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let base = targets.pick(&mut rng);
        match pull(&c, base, &repo, &tag, &digest).await {
            Pull::Ok => Counters::add(&ledger.counters.pulls),
            Pull::Retry(_) => {
                Counters::add(&ledger.counters.pull_retries);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Pull::Wrong(e) => ledger.fail(format!("pull {repo}:{tag}: wrong content: {e}")),
            Pull::Gone(e) => {
                // Excused only when a deleter took the tag meanwhile.
                if ledger.get(&repo, &tag) == Some(TagState::Acked(digest.clone())) {
                    ledger.fail(format!("pull {repo}:{tag} (acknowledged at {digest}): {e}"));
                }
            }
        }
    }
}

pub async fn deleter(
    seed: u64,
    c: reqwest::Client,
    targets: Targets,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(3000));
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..700))).await;
        let Some((repo, tag, digest)) = ledger.pick_acked(|n| rng.gen_range(0..n)) else {
            continue;
        };
        // Keep about two thirds of what was pushed.
        if rng.gen_ratio(1, 3) || !ledger.start_delete(&repo, &tag) {
            continue;
        }
        let base = targets.pick(&mut rng);
        let r = c
            .delete(format!("{base}/v2/{repo}/manifests/{tag}"))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                ledger.set(&repo, &tag, TagState::Deleted(digest));
                Counters::add(&ledger.counters.deletes_acked);
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                ledger.fail(format!(
                    "delete {repo}:{tag} (acknowledged at {digest}): 404, the tag was lost"
                ));
                ledger.set(&repo, &tag, TagState::Uncertain(digest));
            }
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                // The gate refused it before anything was written.
                Counters::add(&ledger.counters.deletes_failed);
                ledger.set(&repo, &tag, TagState::Acked(digest));
            }
            _ => {
                Counters::add(&ledger.counters.deletes_failed);
                ledger.set(&repo, &tag, TagState::Uncertain(digest));
            }
        }
    }
}

/// SIGKILLs one of `victims` (picked at random when there are several)
/// every `between` (random within), restarts it on the same ports and waits
/// until it is ready. Each kill and restart holds `faults`, so another fault
/// (the cluster soak's PostgreSQL restart) never overlaps a restart.
pub async fn killer(
    seed: u64,
    victims: Vec<Arc<Regate>>,
    between: std::ops::Range<u64>,
    faults: Arc<tokio::sync::Mutex<()>>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let wait = rng.gen_range(between.clone());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let r = match victims.len() {
            1 => Arc::clone(&victims[0]),
            n => Arc::clone(&victims[rng.gen_range(0..n)]),
        };
        let _fault = faults.lock().await;
        tokio::task::spawn_blocking(move || {
            r.kill();
            r.restart(str::to_owned);
        })
        .await
        .unwrap();
        Counters::add(&ledger.counters.kills);
    }
}

/// Collects the GC runs regate reports (id -> final status), polling the
/// admin API of each of `admins` in turn (replicas share their history).
pub async fn gc_monitor(
    admins: Vec<String>,
    runs: Arc<Mutex<BTreeMap<i64, serde_json::Value>>>,
    stop: Arc<AtomicBool>,
) {
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        let admin = &admins[turn % admins.len()];
        turn += 1;
        if let Ok(r) = c.get(format!("{admin}/admin/gc")).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let mut runs = runs.lock().unwrap();
                for run in v["history"].as_array().into_iter().flatten() {
                    if let (Some(id), Some(s)) = (run["id"].as_i64(), run["status"].as_str()) {
                        if s != "running" {
                            runs.insert(id, run.clone());
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
