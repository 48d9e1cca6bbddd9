//! Dummy configs staged ahead of tag deletes, on a real 2.8 registry: after a
//! delete, the next one in the same repository takes a config uploaded in
//! the background (two fewer registry writes on its path), waiting for it if
//! it is still on its way; a garbage
//! collection that deleted the staged config does not break the delete
//! (the config is uploaded again); and what a stopped regate left staged is
//! unlinked at the next start. Every delete removes exactly its tag.

use crate::common;

use std::time::{Duration, Instant};

use common::gc::{gc_section, metric, start_gc};
use common::images::{put_manifest, ACCEPT_ALL};
use common::{storage, Image, Regate, Registry};
use regate::state::State;

const REPO: &str = "staged/app";

/// The config staged in [`REPO`], once it is recorded and its blob is in the
/// repository.
async fn wait_staged(regate: &Regate, registry: &Registry) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = State::open(regate.state_dir.path()).unwrap();
        let staged = state.dummy_configs().unwrap();
        if let Some((_, d)) = staged.iter().find(|(r, _)| r == REPO) {
            if storage::layer_links(&registry.storage, REPO).contains(d)
                && storage::read_blob(&registry.storage, d).is_some()
            {
                return d.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no config staged in {REPO}: {staged:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `digest` is no longer linked into [`REPO`] (a used config is
/// unlinked right after the delete's answer).
async fn wait_unlinked(registry: &Registry, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while storage::layer_links(&registry.storage, REPO).contains(&digest.to_owned()) {
        assert!(Instant::now() < deadline, "{digest} is still linked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delete(regate: &Regate, tag: &str) {
    let r = regate
        .client()
        .delete(format!("{}/v2/{REPO}/manifests/{tag}", regate.url))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 202, "DELETE {tag}: {}", r.text().await.unwrap());
}

async fn configs(regate: &Regate, source: &str) -> f64 {
    metric(
        &regate.admin_url,
        &format!("regate_tag_delete_dummy_configs_total{{source=\"{source}\"}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_configs_serve_the_next_delete_survive_gc_and_are_unlinked_after_a_restart() {
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, &gc_section(&registry, "")).await;
    let client = regate.client();
    let img = Image::oci("staged", 1200);
    img.push(&client, &regate.url, REPO, "t1").await;
    for t in ["t2", "t2b", "t3", "keep"] {
        put_manifest(&client, &regate.url, REPO, t, &img).await;
    }
    let links_before = storage::layer_links(&registry.storage, REPO);

    // The first delete uploads its config; a fresh one is staged after it.
    delete(&regate, "t1").await;
    assert_eq!(configs(&regate, "uploaded").await, 1.0);
    let first = wait_staged(&regate, &registry).await;

    // The second takes it (and unlinks it after its answer); right after it, the
    // next config is still on its way: the third waits for it.
    delete(&regate, "t2").await;
    delete(&regate, "t2b").await;
    assert_eq!(configs(&regate, "staged").await, 2.0);
    assert_eq!(configs(&regate, "uploaded").await, 1.0);
    wait_unlinked(&registry, &first).await;
    let second = wait_staged(&regate, &registry).await;
    assert_ne!(first, second, "every delete has its own config");

    // GC deletes the staged config (unreferenced); the delete uploads it again.
    start_gc(&regate.admin_url, false, false, true).await;
    assert!(
        storage::read_blob(&registry.storage, &second).is_none(),
        "GC took it"
    );
    delete(&regate, "t3").await;
    assert_eq!(configs(&regate, "restaged").await, 1.0);
    let third = wait_staged(&regate, &registry).await;

    // Exactly the deleted tags went; no dummy manifest is left.
    assert_eq!(
        storage::tags(&registry.storage, REPO),
        vec![("keep".to_owned(), img.digest.clone())]
    );
    assert_eq!(
        storage::revisions(&registry.storage, REPO),
        vec![img.digest.clone()]
    );

    // Stopped with a config staged: the next start unlinks it.
    let regate = regate.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while storage::layer_links(&registry.storage, REPO).contains(&third)
        || !State::open(regate.state_dir.path())
            .unwrap()
            .dummy_configs()
            .unwrap()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the staged config {third} is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The repository links what it linked before the deletes, and nothing more.
    let mut links = storage::layer_links(&registry.storage, REPO);
    links.retain(|l| l != &second); // GC removed its data; 2.8 keeps the link file
    assert_eq!(links, links_before);
    let r = regate
        .client()
        .head(format!("{}/v2/{REPO}/manifests/keep", regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    regate.stop().await;
}
