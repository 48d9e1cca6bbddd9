//! The cluster's tables are steps of the state's numbered migrations: a
//! database an older regate set up (state steps 1 and 2, the cluster's
//! tables created at connect, scheduled GC times keyed by time only)
//! upgrades at start, keeping what it holds.

use crate::common;

use common::gc::get_json;
use common::postgres::{replica_extra, Postgres};
use common::{Image, Regate, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_set_up_by_the_older_cluster_code_upgrades_at_start() {
    let pg = Postgres::start();
    let url = pg.create_database("upgrade");
    let registry = Registry::start();
    let extra = replica_extra(&url, "");

    // This regate sets the database up; then it is put back the way the
    // older code left it: the state's steps 1 and 2 recorded, the cluster's
    // tables (step 3's text is what the older code ran at connect) with
    // scheduled times keyed by time only, and no retention lease table.
    let first = Regate::start_with(&registry.url, &extra).await;
    let img = Image::oci("upgrade", 400);
    img.push(&first.client(), &first.url, "up/app", "v1").await;
    first.stop().await;
    assert_eq!(
        pg.sql(
            "upgrade",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        "1,2,3,4"
    );
    pg.sql(
        "upgrade",
        "DROP TABLE regate_cluster_runs;
         ALTER TABLE regate_cluster_ticks DROP CONSTRAINT regate_cluster_ticks_pkey;
         ALTER TABLE regate_cluster_ticks DROP COLUMN kind;
         ALTER TABLE regate_cluster_ticks ADD CONSTRAINT regate_cluster_gc_ticks_pkey PRIMARY KEY (tick_ms);
         ALTER TABLE regate_cluster_ticks RENAME TO regate_cluster_gc_ticks;
         INSERT INTO regate_cluster_gc_ticks (tick_ms, replica) VALUES (1700000000000, 'older');
         UPDATE regate_cluster_gate SET generation = 41;
         DELETE FROM schema_migrations WHERE version > 2;",
    );

    let again = Regate::start_with(&registry.url, &extra).await;
    assert_eq!(
        pg.sql(
            "upgrade",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        "1,2,3,4",
        "the cluster's steps applied"
    );
    assert_eq!(
        pg.sql(
            "upgrade",
            "SELECT kind || ' ' || tick_ms || ' ' || replica FROM regate_cluster_ticks"
        ),
        "gc 1700000000000 older",
        "an older claim is kept, as a GC time"
    );
    assert_eq!(
        pg.sql(
            "upgrade",
            "SELECT to_regclass('regate_cluster_gc_ticks') IS NULL"
        ),
        "t"
    );
    assert_eq!(
        pg.sql("upgrade", "SELECT generation FROM regate_cluster_gate"),
        "41",
        "the gate's row is kept"
    );
    // The upgraded replica serves and coordinates as before.
    let gc = get_json(&format!("{}/admin/gc", again.admin_url)).await;
    assert_eq!(gc["gate"]["cluster"]["state"], "open", "{gc}");
    let r = again
        .client()
        .get(format!("{}/v2/up/app/manifests/v1", again.url))
        .header("accept", common::images::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], img.digest.as_str());
    // Both kinds claim the same time apart.
    pg.sql(
        "upgrade",
        "INSERT INTO regate_cluster_ticks (kind, tick_ms, replica) VALUES ('retention', 1700000000000, 'x')",
    );
    again.stop().await;
}
