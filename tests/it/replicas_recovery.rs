//! Undo and crash recovery of tag deletes across replicas on one `[state]
//! url`: both take the tag's lock on every replica, as deletes do. A restore
//! through A is ordered with a push of the same tag through B (the push is
//! never overwritten by the restore); the recovery by a live replica of the
//! delete of a replica killed after its dummy PUT is never seen by readers
//! of the live replicas (no dummy served, not even when the dead replica's
//! lock is handed over).

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::images::{put_manifest, watch_tag, ACCEPT_ALL};
use common::postgres::{replica_extra, Postgres};
use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
use common::{Image, Regate, Registry};

async fn digest_of(client: &reqwest::Client, base: &str, repo: &str, tag: &str) -> Option<String> {
    let r = client
        .head(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    (r.status() == 200).then(|| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_through_a_is_ordered_with_a_push_of_the_tag_through_b() {
    let pg = Postgres::start();
    let url = pg.create_database("restore");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    // A's registry answers slowly: the restore's check and its PUT are apart.
    let relay = common::relay::Relay::start_with_delay(
        &format!("127.0.0.1:{}", ra.port),
        Duration::from_millis(150),
    )
    .await;
    let a = Regate::start_with(&relay.url, &replica_extra(&url, "")).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, "")).await;
    let (ca, cb) = (a.client(), b.client());
    let repo = "undo/app";
    let one = Image::oci("restore-race-one", 800);
    let two = Image::oci("restore-race-two", 800);
    one.push(&cb, &b.url, repo, "x").await;
    two.push(&cb, &b.url, repo, "base-two").await;
    let r = cb
        .delete(format!("{}/v2/{repo}/manifests/x", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = watch_tag(
        b.client(),
        b.url.clone(),
        repo,
        "x",
        vec![one.digest.clone(), two.digest.clone()],
        stop.clone(),
        seen.clone(),
    );
    let restore = tokio::spawn({
        let (ca, url) = (ca.clone(), a.url.clone());
        async move {
            ca.post(format!("{url}/v2/{repo}/_regate/restore/x"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    // After the restore found the tag absent, before its PUT lands.
    tokio::time::sleep(Duration::from_millis(250)).await;
    put_manifest(&cb, &b.url, repo, "x", &two).await;
    let restored = restore.await.unwrap();
    assert!(
        restored == 201 || restored == 409,
        "restore answered {restored}"
    );
    // The push answered after the restore (it waited for the tag's lock),
    // or the restore found the pushed tag: either way the push stands.
    assert_eq!(
        digest_of(&cb, &b.url, repo, "x").await.as_deref(),
        Some(two.digest.as_str()),
        "the restore (answer {restored}) overwrote the push made through B"
    );
    stop.store(true, Ordering::Relaxed);
    let foreign = reader.await.unwrap();
    assert!(foreign.is_empty(), "B's reader saw {foreign:?}");
    eprintln!(
        "restore answered {restored}; B's reader saw the tag {} times",
        seen.load(Ordering::Relaxed)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_of_live_replicas_never_see_the_dummy_a_killed_replica_left() {
    let pg = Postgres::start();
    let url = pg.create_database("recover");
    let registry = Registry::start();
    let direct = reqwest::Client::new();
    // B recovers (the replica whose check claims the entry), C only holds.
    let b = Regate::start_with(&registry.url, &replica_extra(&url, "")).await;
    let c = Regate::start_with(&registry.url, &replica_extra(&url, "")).await;
    let repo = "killed/app";
    let img = Image::oci("killed-mid-delete", 1200);
    img.push(&direct, &registry.url, repo, "victim").await;
    put_manifest(&direct, &registry.url, repo, "other", &img).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = [&b, &c]
        .iter()
        .map(|r| {
            watch_tag(
                r.client(),
                r.url.clone(),
                repo,
                "victim",
                vec![img.digest.clone()],
                stop.clone(),
                seen.clone(),
            )
        })
        .collect();

    // Replica A dies right after pointing the tag at its dummy.
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        config_toml(&registry.url, &certs, &dir.path().join("state"), ""),
        replica_extra(&url, "")
    );
    let client = client_trusting(&certs.files.ca_cert);
    RegateProcess::crash_during(dir.path(), &config, "tag_delete:after_dummy_put", |u| {
        client
            .delete(format!("{u}/v2/{repo}/manifests/victim"))
            .send()
    })
    .await;
    let started = Instant::now();
    while pg.sql(
        "recover",
        "SELECT count(*) FROM tag_delete_journal WHERE open = 1",
    ) != "0"
    {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the entry is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the dead replica's silence bound, when its lock rows went.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let foreign = r.await.unwrap();
        assert!(
            foreign.is_empty(),
            "a live replica's reader saw {foreign:?}"
        );
    }
    assert_eq!(
        digest_of(&b.client(), &b.url, repo, "victim").await,
        None,
        "rolled forward"
    );
    assert_eq!(
        digest_of(&c.client(), &c.url, repo, "other")
            .await
            .as_deref(),
        Some(img.digest.as_str())
    );
    eprintln!(
        "recovered after {:?}; readers saw the tag {} times",
        started.elapsed(),
        seen.load(Ordering::Relaxed)
    );
    // Every lock held for the dead replica is let go.
    for r in [&b, &c] {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !r.server.as_ref().unwrap().app.tags.locks.is_empty() {
            assert!(Instant::now() < deadline, "a replica still holds tag locks");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    b.stop().await;
    c.stop().await;
}
