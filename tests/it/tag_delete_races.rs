//! The tag delete under concurrency and crashes: a push racing a delete of
//! the same tag, and regate killed at every step of the sequence.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::images::{put_manifest, ACCEPT_ALL};
use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
use common::{storage, Image, Regate, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_racing_a_delete_never_exposes_the_dummy() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let repo = "race/app";
    let a = Image::oci("race-a", 1000);
    let b = Image::docker("race-b", 1000);
    a.push(&client, &regate.url, repo, "base-a").await;
    b.push(&client, &regate.url, repo, "base-b").await;
    let allowed = [a.digest.clone(), b.digest.clone()];

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = common::images::watch_tag(
        client.clone(),
        regate.url.clone(),
        repo,
        "x",
        allowed.to_vec(),
        stop.clone(),
        seen.clone(),
    );

    let mut removed = 0;
    for round in 0..200 {
        put_manifest(&client, &regate.url, repo, "x", &a).await;
        let push = put_manifest(&client, &regate.url, repo, "x", &b);
        let delete = client
            .delete(format!("{}/v2/{repo}/manifests/x", regate.url))
            .send();
        let (_, del) = tokio::join!(push, delete);
        let del = del.unwrap();
        assert_eq!(
            del.status(),
            202,
            "round {round}: {}",
            del.text().await.unwrap()
        );
        let r = client
            .head(format!("{}/v2/{repo}/manifests/x", regate.url))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            404 => removed += 1,
            200 => assert_eq!(
                r.headers()["docker-content-digest"],
                b.digest.as_str(),
                "round {round}: only the pushed digest may remain"
            ),
            s => panic!("round {round}: {s}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let foreign = reader.await.unwrap();
    assert!(
        foreign.is_empty(),
        "readers saw dummy manifests: {foreign:?}"
    );
    assert!(
        seen.load(Ordering::Relaxed) > 0,
        "the reader observed the tag"
    );
    eprintln!(
        "200 rounds: tag removed in {removed}, pushed digest kept in {}",
        200 - removed
    );
    // No dummy manifest is left in the registry.
    for rev in storage::revisions(&registry.storage, repo) {
        assert!(allowed.contains(&rev), "stray manifest {rev}");
    }
    assert!(
        regate.server.as_ref().unwrap().app.tags.locks.is_empty(),
        "every tag lock was released"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_ends_removed_or_original_never_a_dummy() {
    let registry = Registry::start();
    let direct = reqwest::Client::new();
    for (i, step) in regate::tag_delete::fault::STEPS.iter().enumerate() {
        let repo = format!("crash/s{i}");
        let img = Image::oci(&format!("crash-{step}"), 1500);
        img.push(&direct, &registry.url, &repo, "victim").await;
        put_manifest(&direct, &registry.url, &repo, "other", &img).await;
        let blobs_before = storage::layer_links(&registry.storage, &repo);

        let certs = TestCerts::new();
        let dir = tempfile::tempdir().unwrap();
        let config = config_toml(&registry.url, &certs, &dir.path().join("state"), "");
        let client = client_trusting(&certs.files.ca_cert);
        let fault = format!("tag_delete:{step}");
        RegateProcess::crash_during(dir.path(), &config, &fault, |url| {
            client
                .delete(format!("{url}/v2/{repo}/manifests/victim"))
                .send()
        })
        .await;

        // Restart: the journal entry is resolved before anything is served.
        let regate = RegateProcess::spawn(dir.path(), &config, &[]);
        let r = client
            .head(format!("{}/v2/{repo}/manifests/victim", regate.url))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        let expect_removed = matches!(*step, "after_dummy_put" | "after_dummy_delete");
        if expect_removed {
            assert_eq!(
                r.status(),
                404,
                "{step}: rolled forward, the tag is removed"
            );
        } else {
            assert_eq!(r.status(), 200, "{step}: rolled back");
            assert_eq!(
                r.headers()["docker-content-digest"],
                img.digest.as_str(),
                "{step}: original digest"
            );
        }
        storage::assert_recovered_cleanly(
            &registry.storage,
            &repo,
            "other",
            &img.digest,
            &blobs_before,
            &dir.path().join("state"),
            usize::from(expect_removed),
            step,
        );
        // And the restarted regate serves deletes normally.
        let r = client
            .delete(format!("{}/v2/{repo}/manifests/other", regate.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{step}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tags_of_one_repository_deleted_at_once_leave_no_dangling_tag() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let repo = "bulk/app";
    let a = Image::oci("bulk-a", 800);
    let b = Image::docker("bulk-b", 800);
    a.push(&client, &regate.url, repo, "keep-a").await;
    b.push(&client, &regate.url, repo, "keep-b").await;
    let doomed: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    for (i, t) in doomed.iter().enumerate() {
        put_manifest(
            &client,
            &regate.url,
            repo,
            t,
            if i % 2 == 0 { &a } else { &b },
        )
        .await;
    }
    let deletes = doomed.iter().map(|t| {
        let (client, url) = (client.clone(), regate.url.clone());
        async move {
            client
                .delete(format!("{url}/v2/{repo}/manifests/{t}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(deletes).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    // Nothing dangles: the storage holds only the two kept tags and manifests.
    assert_eq!(
        storage::tags(&registry.storage, repo),
        vec![
            ("keep-a".to_owned(), a.digest.clone()),
            ("keep-b".to_owned(), b.digest.clone())
        ]
    );
    let mut want = vec![a.digest.clone(), b.digest.clone()];
    want.sort();
    assert_eq!(storage::revisions(&registry.storage, repo), want);
    regate.stop().await;
}

/// A registry behind a relay that holds each request 40 ms, regate in front
/// of the relay, and `repo` with one image tagged `victim` and `other`.
async fn slow_rig(repo: &str) -> (Registry, common::relay::Relay, Regate, Image) {
    let registry = Registry::start();
    let relay = common::relay::Relay::start_with_delay(
        &format!("127.0.0.1:{}", registry.port),
        Duration::from_millis(40),
    )
    .await;
    let regate = Regate::start(&relay.url).await;
    let direct = reqwest::Client::new();
    let img = Image::oci(repo, 1000);
    img.push(&direct, &registry.url, repo, "victim").await;
    put_manifest(&direct, &registry.url, repo, "other", &img).await;
    (registry, relay, regate, img)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_delete_does_not_stop_it() {
    // A slow registry (40 ms per request), so the client gives up mid-way.
    let (registry, _relay, regate, img) = slow_rig("cut/app").await;
    let repo = "cut/app";

    // Gone after 220 ms: about when the dummy is on the tag and its DELETE
    // is under way.
    let r = regate
        .client()
        .delete(format!("{}/v2/{repo}/manifests/victim", regate.url))
        .timeout(Duration::from_millis(220))
        .send()
        .await;
    assert!(r.is_err(), "the client should have given up: {r:?}");

    // The delete runs to its end all the same: the tag removed, no dummy.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tags = storage::tags(&registry.storage, repo);
        let revisions = storage::revisions(&registry.storage, repo);
        if tags == vec![("other".to_owned(), img.digest.clone())]
            && revisions == vec![img.digest.clone()]
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the client left: tags {tags:?}, manifests {revisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_lost_mid_delete_keeps_the_tag_locked_until_recovered() {
    let (registry, relay, regate, img) = slow_rig("lost/app").await;
    let repo = "lost/app";

    // The registry goes away after the intent is journalled, around the
    // dummy PUT: the delete fails, and so does its recovery.
    let client = regate.client();
    let url = format!("{}/v2/{repo}/manifests/victim", regate.url);
    let delete = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.delete(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(180)).await;
    relay.set_down(true);
    let status = delete.await.unwrap();
    assert!(status.is_server_error(), "the delete failed: {status}");

    // While the registry is away, the tag stays locked: a read waits rather
    // than see what the registry holds mid-delete.
    let read = client
        .head(&url)
        .header("accept", ACCEPT_ALL)
        .timeout(Duration::from_millis(800))
        .send()
        .await;
    assert!(
        read.is_err(),
        "a read was answered while the delete was unresolved: {read:?}"
    );

    // Back: the background recovery ends it, removed or at the original;
    // never at a dummy, and no dummy stays.
    relay.set_down(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .head(&url)
            .header("accept", ACCEPT_ALL)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        let revisions = storage::revisions(&registry.storage, repo);
        if let Ok(r) = r {
            let ok = match r.status().as_u16() {
                404 => true,
                200 => r.headers()["docker-content-digest"] == img.digest.as_str(),
                _ => false,
            };
            if ok && revisions == vec![img.digest.clone()] {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not recovered: manifests {revisions:?}, tags {:?}",
            storage::tags(&registry.storage, repo)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        storage::tags(&registry.storage, repo).contains(&("other".to_owned(), img.digest.clone()))
    );
    regate.stop().await;
}

/// With `protect_shared_digests`, a digest delete racing a tag PUT of the
/// same digest never removes the tag the PUT was acknowledged for: the
/// repository lock is taken before the tag check, so the PUT is either seen
/// by the check (409) or waits until the delete is done (and then re-links
/// the manifest). A slow registry (every request held 300 ms) opens the gap
/// between the check and the lock that the old order left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protected_digest_delete_never_removes_a_tag_pushed_during_its_check() {
    let registry = Registry::start();
    let repo = "race/shared";
    let img = Image::oci("race-shared", 500);
    // Untagged in the registry: only the digest exists.
    img.push(&reqwest::Client::new(), &registry.url, repo, &img.digest)
        .await;
    let relay = common::relay::Relay::start_with_delay(
        registry.url.trim_start_matches("http://"),
        Duration::from_millis(300),
    )
    .await;
    let regate = Regate::start_with(&relay.url, "[delete]\nprotect_shared_digests = true\n").await;
    let client = regate.client();

    let delete = {
        let (client, url, digest) = (client.clone(), regate.url.clone(), img.digest.clone());
        tokio::spawn(async move {
            client
                .delete(format!("{url}/v2/{repo}/manifests/{digest}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // The delete's check (a tag list through the slow registry) is under way.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let put = client
        .put(format!("{}/v2/{repo}/manifests/pushed", regate.url))
        .header("content-type", &img.media_type)
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let delete = delete.await.unwrap();
    assert!(matches!(delete, 202 | 409), "delete answered {delete}");
    assert_eq!(put, 201, "the tag PUT");
    let r = reqwest::Client::new()
        .head(format!("{}/v2/{repo}/manifests/pushed", registry.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the acknowledged tag is gone (delete answered {delete})"
    );
    assert_eq!(r.headers()["docker-content-digest"], img.digest.as_str());
    regate.stop().await;
}
