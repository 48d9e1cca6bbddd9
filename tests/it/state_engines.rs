//! regate's state on both engines: the same sequence of `State` calls
//! (journal, deletions and undo, dummy configs, referrers, GC history and
//! its walk, maintenance, meta) against SQLite in a temp dir and against a
//! real PostgreSQL server of the test's own, with the same answers; several
//! replicas opening one empty PostgreSQL database at once (the migrations
//! run once); the claim of a dead replica's journal entries, exactly once;
//! and a replica registering while others clean up dead replicas' rows.

use crate::common;

use common::postgres::Postgres;
use regate::config::StateUrl;
use regate::state::gc_history::{GcPhase, GcRun, GcStatus, GcTrigger, Maintenance};
use regate::state::{Deletion, JournalEntry, JournalStep, Referrer, State};

fn entry(tag: &str, config: &str) -> JournalEntry {
    JournalEntry {
        id: 0,
        repository: "a/b".into(),
        tag: tag.into(),
        original_digest: "sha256:o".into(),
        original_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        dummy_digest: "sha256:d".into(),
        dummy_config_digest: config.into(),
        step: JournalStep::Intent,
        account: "alice".into(),
    }
}

fn deletion(tag: &str, manifest: Option<&[u8]>) -> Deletion {
    Deletion {
        id: 0,
        repository: "a/b".into(),
        tag: tag.into(),
        digest: "sha256:o".into(),
        media_type: "m".into(),
        manifest: manifest.map(<[u8]>::to_vec),
        account: "alice".into(),
        deleted_at: 0,
        restored_at: None,
    }
}

/// Every method once, checking what comes back; the same on both engines.
fn the_sequence(s: &State) {
    // meta
    assert_eq!(s.get_meta("k").unwrap(), None);
    s.set_meta("k", "v1").unwrap();
    s.set_meta("k", "v2").unwrap();
    assert_eq!(s.get_meta("k").unwrap().as_deref(), Some("v2"));

    // dummy configs, taken over by a journal entry
    s.note_dummy_config("a/b", "sha256:c1").unwrap();
    s.note_dummy_config("a/c", "sha256:c2").unwrap();
    s.note_dummy_config("a/c", "sha256:c2").unwrap();
    assert_eq!(s.dummy_configs().unwrap().len(), 2);
    let ids = s
        .journal_begin_many(&[entry("t1", "sha256:c1"), entry("t2", "sha256:cx")])
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    assert_eq!(
        s.dummy_configs().unwrap(),
        vec![("a/c".to_owned(), "sha256:c2".to_owned())]
    );
    s.forget_dummy_config("sha256:c2").unwrap();
    assert!(s.dummy_configs().unwrap().is_empty());
    let open = s.journal_open_entries().unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].id, ids[0]);
    assert_eq!(open[0].tag, "t1");
    assert_eq!(open[1].dummy_config_digest, "sha256:cx");
    let third = s.journal_begin(&entry("t3", "sha256:c3")).unwrap();
    s.journal_close(third, JournalStep::RolledBack).unwrap();
    assert_eq!(s.journal_open_entries().unwrap().len(), 2);

    // deletions: recorded closing their entries; undo
    s.record_deletions(&[(deletion("t1", Some(b"{\"a\":1}")), ids[0])])
        .unwrap();
    let id2 = s
        .record_deletion(&deletion("t2", None), Some(ids[1]))
        .unwrap();
    assert!(s.journal_open_entries().unwrap().is_empty());
    let last = s.last_deletion("a/b", "t1").unwrap().unwrap();
    assert_eq!(last.manifest.as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!(last.account, "alice");
    assert!(last.deleted_at > 0);
    assert_eq!(
        s.last_deletion("a/b", "t2").unwrap().unwrap().manifest,
        None
    );
    s.mark_restored(id2).unwrap();
    assert!(s.last_deletion("a/b", "t2").unwrap().is_none());
    let all = s.deletions(None, 10).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, id2, "newest first");
    assert!(all[0].restored_at.is_some());
    assert_eq!(s.deletions(Some("a/b"), 1).unwrap().len(), 1);
    assert!(s.deletions(Some("x"), 10).unwrap().is_empty());
    s.journal_close_many(&[], JournalStep::Removed).unwrap();

    // referrers
    let r = Referrer {
        repository: "a".into(),
        digest: "sha256:2".into(),
        subject: "sha256:1".into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: 10,
        artifact_type: Some("application/x-sig".into()),
        annotations: Some("{\"k\":\"v\"}".into()),
    };
    s.put_referrer(&r).unwrap();
    s.put_referrer(&r).unwrap();
    assert_eq!(s.referrers_of("a", "sha256:1").unwrap(), vec![r.clone()]);
    let mut other = r.clone();
    other.digest = "sha256:3".into();
    other.artifact_type = None;
    s.replace_referrers(&[r.clone(), other.clone(), other.clone()])
        .unwrap();
    assert_eq!(s.referrer_count().unwrap(), 2);
    s.remove_referrer("a", "sha256:2").unwrap();
    assert_eq!(s.referrers_of("a", "sha256:1").unwrap(), vec![other]);

    // GC history, its walk, pruning
    let mut run = GcRun {
        trigger: GcTrigger::Manual,
        dry_run: true,
        untagged: true,
        status: GcStatus::Running,
        phase: GcPhase::Starting,
        started_at_ms: 1_700_000_000_000,
        deadline_at_ms: Some(1_700_000_100_000),
        ..Default::default()
    };
    run.id = s.gc_run_insert(&run).unwrap();
    run.pid = Some(42);
    run.pid_start = Some("123".into());
    run.drain_timed_out = Some(false);
    run.bytes_before = Some(1000);
    run.bytes_after = Some(400);
    run.untagged_report = Some(serde_json::json!({"repos": []}));
    s.gc_run_save(&run).unwrap();
    let plan = serde_json::json!({"repository": "a", "delete": ["x"]});
    s.gc_walk_finish(run.id, "a", &plan).unwrap();
    s.gc_walk_begin(run.id, "b", &plan).unwrap();
    s.gc_walk_deleted(run.id, "b").unwrap();
    s.gc_walk_begin(run.id, "b", &plan).unwrap();
    let walk = s.gc_walk(run.id).unwrap();
    assert_eq!(walk.len(), 2);
    assert!(walk[0].done && walk[0].report == plan);
    assert!(!walk[1].done && walk[1].deleted == 1);
    let running = s.gc_runs_running().unwrap();
    assert_eq!(running.len(), 1);
    let got = &running[0];
    assert!(got.dry_run && got.untagged);
    assert_eq!(got.pid, Some(42));
    assert_eq!(got.pid_start.as_deref(), Some("123"));
    assert_eq!(got.drain_timed_out, Some(false));
    assert_eq!(got.bytes_freed(), Some(600));
    assert_eq!(got.deadline_at_ms, Some(1_700_000_100_000));
    assert_eq!(got.attempts, 1);
    assert_eq!(got.replica.as_deref(), Some(s.replica()));
    assert_eq!(
        got.untagged_report.as_ref().unwrap()["repos"],
        serde_json::json!([])
    );
    run.status = GcStatus::Succeeded;
    run.log_path = Some("/logs/1.log".into());
    s.gc_run_save(&run).unwrap();
    let mut later = Vec::new();
    for i in 0..3 {
        let mut r = run.clone();
        r.log_path = Some(format!("/logs/later-{i}.log"));
        r.id = s.gc_run_insert(&r).unwrap();
        s.gc_run_save(&r).unwrap();
        later.push(r.id);
    }
    assert_eq!(
        s.gc_runs_prune(2).unwrap(),
        vec!["/logs/1.log".to_owned(), "/logs/later-0.log".to_owned()]
    );
    let left: Vec<i64> = s.gc_runs_recent(10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, vec![later[2], later[1]]);
    assert!(
        s.gc_walk(run.id).unwrap().is_empty(),
        "the walk went with its run"
    );
    assert!(s.gc_run(run.id).unwrap().is_none());
    assert_eq!(
        s.gc_run(later[1]).unwrap().unwrap().status,
        GcStatus::Succeeded
    );

    // maintenance
    assert!(s.maintenance().unwrap().is_none());
    s.set_maintenance(Some(&Maintenance {
        reason: "backup".into(),
        since_ms: 5,
    }))
    .unwrap();
    s.set_maintenance(Some(&Maintenance {
        reason: "backup 2".into(),
        since_ms: 6,
    }))
    .unwrap();
    let m = s.maintenance().unwrap().unwrap();
    assert_eq!((m.reason.as_str(), m.since_ms), ("backup 2", 6));
    s.set_maintenance(None).unwrap();
    assert!(s.maintenance().unwrap().is_none());

    // Retention: push and pull times, runs.
    s.record_pushes(&[("r/a".into(), "t1".into(), "sha256:1".into(), 100)])
        .unwrap();
    s.record_pushes(&[("r/a".into(), "t1".into(), "sha256:2".into(), 200)])
        .unwrap();
    s.record_pulls(&[
        ("r/a".into(), "t1".into(), 500),
        ("r/a".into(), "t2".into(), 400),
    ])
    .unwrap();
    s.record_pulls(&[("r/a".into(), "t1".into(), 450)]).unwrap();
    let times = s.tag_times("r/a").unwrap();
    assert_eq!(times["t1"].pushed, Some(("sha256:2".into(), 200)));
    assert_eq!(
        (times["t1"].pulled_at, times["t2"].pulled_at),
        (Some(500), Some(400))
    );
    let run = regate::state::RetentionRun {
        id: 0,
        started_at: 10,
        finished_at: 12,
        dry_run: false,
        forced: true,
        account: "ops".into(),
        planned: 3,
        deleted: 2,
        failed: 1,
        skipped: 0,
        summary: serde_json::json!({"repositories": ["r/a"]}),
    };
    let id = s.retention_run_insert(&run).unwrap();
    assert_eq!(
        s.retention_runs(5).unwrap(),
        [regate::state::RetentionRun { id, ..run }]
    );
}

fn pg_state(url: &str) -> State {
    State::open_url(&StateUrl::parse(url).unwrap()).unwrap()
}

#[test]
fn every_method_answers_the_same_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    the_sequence(&State::open(dir.path()).unwrap());

    let pg = Postgres::start();
    let url = pg.create_database("sequence");
    let s = pg_state(&url);
    assert!(s.is_shared());
    the_sequence(&s);
    // States are stored as their text; a text this regate does not know is
    // an error naming the table, the column and the text.
    let id = s
        .gc_run_insert(&GcRun {
            trigger: GcTrigger::Schedule,
            phase: GcPhase::Draining,
            ..Default::default()
        })
        .unwrap();
    let row =
        format!("SELECT trigger || ',' || status || ',' || phase FROM gc_runs WHERE id = {id}");
    assert_eq!(pg.sql("sequence", &row), "schedule,running,draining");
    pg.sql(
        "sequence",
        &format!("UPDATE gc_runs SET phase = 'sweeping' WHERE id = {id}"),
    );
    let err = s.gc_run(id).unwrap_err().to_string();
    assert!(
        err.contains("gc_runs") && err.contains("phase") && err.contains("\"sweeping\""),
        "{err}"
    );
    pg.sql(
        "sequence",
        &format!("UPDATE gc_runs SET status = 'failed', phase = 'done' WHERE id = {id}"),
    );
    // A second replica sees what the first wrote.
    let other = pg_state(&url);
    assert_eq!(other.get_meta("k").unwrap().as_deref(), Some("v2"));
    assert_eq!(other.deletions(None, 10).unwrap().len(), 2);
    assert!(!other.describe().contains(common::postgres::PASSWORD));
}

#[test]
fn replicas_opening_one_empty_database_at_once_migrate_it_once() {
    let pg = Postgres::start();
    let url = pg.create_database("race");
    let states: Vec<State> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3).map(|_| scope.spawn(|| pg_state(&url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        pg.sql(
            "race",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        // The state's steps, then the cluster's.
        "1,2,3,4"
    );
    // Each is a replica of its own, alive, and they share one journal.
    let ids: std::collections::HashSet<&str> = states.iter().map(|s| s.replica()).collect();
    assert_eq!(ids.len(), 3);
    let listed = states[0].replicas().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|(_, alive)| *alive), "{listed:?}");
    let id = states[1].journal_begin(&entry("t", "sha256:c")).unwrap();
    assert_eq!(states[2].journal_open_entries().unwrap()[0].id, id);
}

#[test]
fn a_dead_replicas_entries_are_claimed_once_and_a_live_ones_never() {
    let pg = Postgres::start();
    let url = pg.create_database("claim");
    let alive = pg_state(&url);
    let dying = pg_state(&url);
    let live_entry = alive.journal_begin(&entry("live", "sha256:c1")).unwrap();
    alive
        .note_dummy_config("a/b", "sha256:staged-live")
        .unwrap();
    let dead_entry = dying.journal_begin(&entry("dead", "sha256:c2")).unwrap();
    dying
        .note_dummy_config("a/b", "sha256:staged-dead")
        .unwrap();

    let b = pg_state(&url);
    let c = pg_state(&url);
    // While it lives, nobody takes its entries.
    assert!(b.claim_orphans().unwrap().entries.is_empty());
    drop(dying); // its connections close: its lock is free
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.sql(
        "claim",
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2",
    ) != "3"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead replica's session did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let (from_b, from_c) = std::thread::scope(|scope| {
        let tb = scope.spawn(|| b.claim_orphans().unwrap());
        let tc = scope.spawn(|| c.claim_orphans().unwrap());
        (tb.join().unwrap(), tc.join().unwrap())
    });
    let entries: Vec<i64> = from_b
        .entries
        .iter()
        .chain(&from_c.entries)
        .map(|e| e.id)
        .collect();
    assert_eq!(entries, vec![dead_entry], "claimed exactly once");
    let configs: Vec<&String> = from_b
        .configs
        .iter()
        .chain(&from_c.configs)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(configs, vec!["sha256:staged-dead"]);
    let winner = if from_b.entries.is_empty() { &c } else { &b };
    assert_eq!(
        pg.sql(
            "claim",
            &format!("SELECT owner FROM tag_delete_journal WHERE id = {dead_entry}")
        ),
        winner.replica()
    );
    assert_eq!(
        pg.sql(
            "claim",
            &format!("SELECT owner FROM tag_delete_journal WHERE id = {live_entry}")
        ),
        alive.replica()
    );
    assert!(b.claim_orphans().unwrap().entries.is_empty());
    assert!(c.claim_orphans().unwrap().entries.is_empty());
    // A replica that dies leaving nothing has its row removed too.
    let idle = pg_state(&url);
    let idle_id = idle.replica().to_owned();
    drop(idle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        b.claim_orphans().unwrap();
        if !b.replicas().unwrap().iter().any(|(id, _)| *id == idle_id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle dead replica's row stays"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The dead replica's row is gone; the live ones are listed alive.
    let listed = alive.replicas().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|(_, alive)| *alive));
}

#[test]
fn sqlite_claims_what_an_earlier_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let first = State::open(dir.path()).unwrap();
    let id = first.journal_begin(&entry("t", "sha256:c")).unwrap();
    first.note_dummy_config("a/b", "sha256:staged").unwrap();
    drop(first);
    let next = State::open(dir.path()).unwrap();
    let got = next.claim_orphans().unwrap();
    assert_eq!(
        got.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id]
    );
    assert_eq!(
        got.configs,
        vec![("a/b".to_owned(), "sha256:staged".to_owned())]
    );
    assert!(next.claim_orphans().unwrap().entries.is_empty());
}

#[test]
fn after_a_postgresql_restart_calls_reconnect_and_the_lease_is_taken_again() {
    let mut pg = Postgres::start();
    let url = pg.create_database("restart");
    let s = pg_state(&url);
    s.set_meta("k", "1").unwrap();
    pg.stop();
    pg.start_again();
    // The pooled connection died with the server: the call runs on a new one.
    assert_eq!(s.get_meta("k").unwrap().as_deref(), Some("1"));
    assert!(s.keep_lease().unwrap(), "the lease is taken again");
    assert_eq!(s.replicas().unwrap(), vec![(s.replica().to_owned(), true)]);
    // While the server is away, calls fail naming state.url, not the
    // server's address (answers to clients may carry it) nor the password.
    pg.stop();
    let e = s.get_meta("k").unwrap_err().to_string();
    assert!(
        e.contains("state.url")
            && !e.contains("127.0.0.1")
            && !e.contains(common::postgres::PASSWORD),
        "{e}"
    );
    pg.start_again();
    assert_eq!(s.get_meta("k").unwrap().as_deref(), Some("1"));
}

#[test]
fn a_running_gc_is_taken_over_only_from_a_dead_replica_and_once() {
    let pg = Postgres::start();
    let url = pg.create_database("gcrun");
    let runner = pg_state(&url);
    let run = GcRun {
        trigger: GcTrigger::Manual,
        status: GcStatus::Running,
        phase: GcPhase::Collecting,
        ..Default::default()
    };
    let id = runner.gc_run_insert(&run).unwrap();
    let (b, c) = (pg_state(&url), pg_state(&url));
    assert!(
        b.gc_runs_running().unwrap().is_empty(),
        "a live replica's run is its own"
    );
    assert_eq!(runner.gc_runs_running().unwrap()[0].id, id);
    drop(runner);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (from_b, from_c) = loop {
        let (fb, fc) = std::thread::scope(|scope| {
            let tb = scope.spawn(|| b.gc_runs_running().unwrap());
            let tc = scope.spawn(|| c.gc_runs_running().unwrap());
            (tb.join().unwrap(), tc.join().unwrap())
        });
        if !fb.is_empty() || !fc.is_empty() || std::time::Instant::now() > deadline {
            break (fb, fc);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let ids: Vec<i64> = from_b.iter().chain(&from_c).map(|r| r.id).collect();
    assert_eq!(ids, vec![id], "taken over exactly once");
    let winner = if from_b.is_empty() { &c } else { &b };
    assert_eq!(
        winner.gc_run(id).unwrap().unwrap().replica.as_deref(),
        Some(winner.replica())
    );
}

#[test]
fn a_replica_registering_while_others_clean_up_keeps_its_row() {
    // A replica's row exists a moment before it holds its lock; the clean-up
    // of dead replicas' rows (every replica's claim) must not take it then.
    let pg = Postgres::start();
    let url = pg.create_database("register");
    let cleaner = pg_state(&url);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    cleaner.claim_orphans().unwrap();
                }
            });
        }
        let openers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..5)
                        .map(|_| {
                            let url = StateUrl::parse(&url).unwrap();
                            State::open_url(&url).map(drop).map_err(|e| e.to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = openers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} opens failed: {:?}",
            failed.len(),
            results.len(),
            failed.first()
        );
    });
}
