//! Retention across replicas on one `[state] url` (a PostgreSQL of the
//! test's own, two real `docker-registry` processes over one storage): each
//! time of `[retention_schedule] schedule` is run by one replica only, and
//! an applied run through A while one runs through B is refused (409)
//! naming B's run.

use crate::common;

use std::time::{Duration, SystemTime};

use common::gc::{gc_section, get_json};
use common::postgres::{replica_extra, Postgres};
use common::{Image, Regate, Registry};
use serde_json::Value;

/// Ages the link of `repo:tag` in `storage` by `days`.
fn age_link(storage: &std::path::Path, repo: &str, tag: &str, days: u64) {
    let link = storage
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    let f = std::fs::File::options().write(true).open(&link).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86400))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_retention_time_is_run_by_one_replica_only() {
    let pg = Postgres::start();
    let url = pg.create_database("retsched");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let rules = "[[retention]]\nrepository = \"old/*\"\nolder_than = \"30d\"\n[retention_schedule]\nschedule = \"*/2 * * * * *\"\n";
    let a = Regate::start_with(
        &ra.url,
        &replica_extra(&url, &format!("{}{rules}", gc_section(&ra, ""))),
    )
    .await;
    let b = Regate::start_with(
        &rb.url,
        &replica_extra(&url, &format!("{}{rules}", gc_section(&rb, ""))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let (runs, distinct): (usize, usize) = {
        let row = pg.sql(
            "retsched",
            "SELECT count(*) || ' ' || count(DISTINCT started_at) FROM retention_runs WHERE account = 'schedule'",
        );
        let mut it = row.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    // Both replicas fire at each time; without an election each time is
    // in the (shared) history twice, with the same start second.
    assert!(runs >= 2, "scheduled runs: {runs}");
    assert_eq!(runs, distinct, "a scheduled time ran on both replicas");
    let ticks: usize = pg
        .sql(
            "retsched",
            "SELECT count(*) FROM regate_cluster_ticks WHERE kind = 'retention'",
        )
        .parse()
        .unwrap();
    assert!(
        runs == ticks || runs + 1 == ticks,
        "{runs} runs for {ticks} claimed times"
    );
    // Both replicas show the one shared history (a time may pass between
    // the two reads).
    let ha = get_json(&format!("{}/admin/retention", a.admin_url)).await;
    let hb = get_json(&format!("{}/admin/retention", b.admin_url)).await;
    let (la, lb) = (
        ha["runs"].as_array().unwrap().len(),
        hb["runs"].as_array().unwrap().len(),
    );
    assert!(lb == la || lb == la + 1, "A lists {la} runs, B {lb}");
    a.stop().await;
    b.stop().await;
}

async fn apply(admin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{admin}/admin/retention"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apply_through_b_while_one_runs_through_a_is_refused_naming_it() {
    let pg = Postgres::start();
    let url = pg.create_database("retapply");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    // A's registry answers slowly, so A's run lasts.
    let relay = common::relay::Relay::start_with_delay(
        &format!("127.0.0.1:{}", ra.port),
        Duration::from_millis(100),
    )
    .await;
    let rules =
        "[[retention]]\nrepository = \"old/*\"\nolder_than = \"30d\"\nmax_delete_fraction = 1\n";
    let a = Regate::start_with(
        &relay.url,
        &replica_extra(&url, &format!("{}{rules}", gc_section(&ra, ""))),
    )
    .await;
    let b = Regate::start_with(
        &rb.url,
        &replica_extra(&url, &format!("{}{rules}", gc_section(&rb, ""))),
    )
    .await;
    let img = Image::oci("retention-apply", 300);
    let direct = reqwest::Client::new();
    let tags: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for t in &tags {
        img.push(&direct, &ra.url, "old/app", t).await;
        age_link(&ra.storage, "old/app", t, 40);
    }
    let a_replica = get_json(&format!("{}/admin/gc", a.admin_url)).await["gate"]["cluster"]
        ["replica"]
        .as_str()
        .unwrap()
        .to_owned();

    let through_a = tokio::spawn({
        let admin = a.admin_url.clone();
        async move { apply(&admin).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = apply(&b.admin_url).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let e = &body["errors"][0];
    assert_eq!(e["code"], "DENIED", "{body}");
    assert_eq!(e["detail"]["replica"], a_replica.as_str(), "{body}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("retention run") && msg.contains(&a_replica),
        "names A's run: {msg}"
    );
    let r = through_a.await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["deleted"], 6, "{report:#}");
    assert!(
        common::storage::tags(&ra.storage, "old/app").is_empty(),
        "A's run deleted the plan"
    );

    // A's run has freed its lease when it answers: B's runs at once.
    let r = apply(&b.admin_url).await;
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    assert_eq!(
        pg.sql("retapply", "SELECT count(*) FROM retention_runs"),
        "2",
        "A's run and B's later one; the refused one left none"
    );
    a.stop().await;
    b.stop().await;
}
