//! Retention against the real registry: a history made by pushing straight
//! to the registry and ageing the tag links' modification times (the test
//! registry's storage is `gc.storage_root`), plus pushes and a pull through
//! regate. The exact plan (rules, reasons, date sources), that a plan changes
//! nothing, that `regate retention apply --yes` deletes exactly the plan, that
//! a kept tag sharing a deleted tag's digest still pulls, restore after apply,
//! the fraction guard (skipped, then forced), and the run history.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::registry::RegistryOptions;
use common::skopeo::{copy, skopeo};
use common::{storage, Image, Regate, Registry};
use serde_json::{json, Value};

const DAY: u64 = 86400;

/// Sets the modification time of `repo:tag`'s link in the storage to `days` ago.
fn age_link(root: &Path, repo: &str, tag: &str, days: u64) {
    let link = root
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    let f = std::fs::File::options().write(true).open(&link).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * DAY))
        .unwrap();
}

/// Pushes `img` straight to the registry as `repo:tag`, `days` old.
async fn push_direct(registry: &Registry, img: &Image, repo: &str, tag: &str, days: u64) {
    let direct = reqwest::Client::new();
    img.push(&direct, &registry.url, repo, tag).await;
    age_link(&registry.storage, repo, tag, days);
}

fn all_tags(root: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for repo in ["ci/app", "ci/big", "other/x"] {
        for (t, d) in storage::tags(root, repo) {
            out.push((repo.to_owned(), t, d));
        }
    }
    out.sort();
    out
}

async fn post(c: &reqwest::Client, admin: &str, body: Value) -> Value {
    let r = c
        .post(format!("{admin}/admin/retention"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn rows(list: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            fields
                .iter()
                .map(|f| match &x[*f] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect()
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(args)
        .env_remove("REGATE_ADMIN_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const RULES: &str = "[[retention]]\nrepository = \"ci/*\"\nkeep_last = 2\nkeep_tags = [\"^v\"]\nolder_than = \"30d\"\nkeep_pulled_within = \"7d\"\n[[retention]]\nrepository = \"nothing/*\"\nolder_than = \"1d\"\n[[protect]]\nrepository = \"ci/*\"\ntags = \"^stable$\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_restore_and_the_fraction_guard() {
    let registry = Registry::start();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.log");
    let extra = format!(
        "[gc]\nstorage_root = {:?}\n[audit]\nfile = {:?}\n{RULES}",
        registry.storage.display().to_string(),
        audit_file.display().to_string()
    );
    let regate = Regate::start_with(&registry.url, &extra).await;
    let c = regate.client();
    let admin = reqwest::Client::new();
    let trust = &regate.certs.trust_dir;
    let (a, b, cc) = (
        Image::oci("ret-a", 1500),
        Image::docker("ret-b", 1500),
        Image::oci("ret-c", 1500),
    );
    let (d, e, f, g) = (
        Image::oci("ret-d", 1500),
        Image::oci("ret-e", 1500),
        Image::oci("ret-f", 1500),
        Image::oci("ret-g", 1500),
    );
    // ci/app: a history straight in the registry, aged...
    push_direct(&registry, &a, "ci/app", "v1.0", 100).await;
    push_direct(&registry, &a, "ci/app", "old-1", 90).await;
    push_direct(&registry, &b, "ci/app", "old-2", 60).await;
    push_direct(&registry, &cc, "ci/app", "old-3", 40).await;
    push_direct(&registry, &a, "ci/app", "stable", 200).await;
    // ... a tag regate saw pushed, then moved behind its back (its record
    // no longer holds: the storage's date counts) ...
    f.push(&c, &regate.url, "ci/app", "moved").await;
    push_direct(&registry, &g, "ci/app", "moved", 50).await;
    // ... and fresh pushes through regate.
    d.push(&c, &regate.url, "ci/app", "new-1").await;
    e.push(&c, &regate.url, "ci/app", "new-2").await;
    // old-3 is old but was just pulled (through regate).
    skopeo(&[
        "inspect",
        "--cert-dir",
        &trust.display().to_string(),
        &format!("docker://{}/ci/app:old-3", regate.host),
    ]);
    // ci/big: 3 of 5 would go (more than half).
    for (i, days) in [90, 91, 92, 93, 94].into_iter().enumerate() {
        let img = Image::oci(&format!("ret-big-{i}"), 500);
        push_direct(&registry, &img, "ci/big", &format!("a{}", i + 1), days).await;
    }
    // No rule for other/x.
    push_direct(&registry, &a, "other/x", "ancient", 999).await;

    let before = all_tags(&registry.storage);
    let plan = post(&admin, &regate.admin_url, json!({"dry_run": true})).await;
    let rule = "retention[0] (ci/*)";
    assert_eq!(
        rows(
            &plan["delete"],
            &["repository", "tag", "digest", "rule", "date_source"]
        ),
        [
            ["ci/app", "moved", &g.digest, rule, "storage"],
            ["ci/app", "old-1", &a.digest, rule, "storage"],
            ["ci/app", "old-2", &b.digest, rule, "storage"],
        ],
        "{plan:#}"
    );
    assert_eq!(
        plan["delete"][1]["reason"],
        "pushed 90d ago, older than 30d"
    );
    let keep_last = "one of the 2 most recently pushed (keep_last)";
    let kept = rows(&plan["keep"], &["repository", "tag", "rule", "date_source"]);
    let app: Vec<_> = kept.iter().filter(|k| k[0] == "ci/app").collect();
    assert_eq!(
        app,
        [
            &["ci/app", "new-1", rule, "regate"],
            &["ci/app", "new-2", rule, "regate"],
            &["ci/app", "old-3", rule, "storage"],
            &["ci/app", "stable", "protect[0] (ci/* ^stable$)", "storage"],
            &["ci/app", "v1.0", rule, "storage"],
        ],
        "{plan:#}"
    );
    let reasons = rows(&plan["keep"], &["tag", "reason"]);
    assert!(
        reasons.contains(&vec!["new-1".into(), keep_last.into()]),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r[0] == "old-3"
            && r[1].starts_with("pulled ")
            && r[1].ends_with("s ago, within keep_pulled_within 7d")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&vec!["v1.0".into(), "matches keep_tags \"^v\"".into()]),
        "{reasons:?}"
    );
    assert!(
        kept.iter().all(|k| k[0] != "other/x"),
        "no rule for other/x"
    );
    assert_eq!(
        plan["skipped"],
        json!([{"repository": "ci/big", "tags": 5, "would_delete": 3, "max_delete_fraction": 0.5}])
    );
    assert_eq!(
        plan["warnings"],
        json!(["retention[1] (nothing/*) matches no repository; check its repository glob"])
    );
    assert_eq!(
        all_tags(&registry.storage),
        before,
        "a plan changes nothing"
    );

    // The CLI's plan is the same, as a table and as JSON.
    let (code, out, err) = cli(&["retention", "plan", "--admin", &regate.admin_url, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["delete"], plan["delete"]);
    let (code, out, err) = cli(&["retention", "plan", "--admin", &regate.admin_url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ci/app: 3 to delete, 5 kept"), "{out}");
    assert!(
        out.contains("SKIPPED ci/big: 3 of its 5 tags would go"),
        "{out}"
    );
    assert!(
        out.contains("warning: retention[1] (nothing/*) matches no repository"),
        "{out}"
    );
    assert_eq!(
        all_tags(&registry.storage),
        before,
        "a plan changes nothing"
    );

    // Apply deletes exactly the plan.
    let (code, out, err) = cli(&["retention", "apply", "--yes", "--admin", &regate.admin_url]);
    assert_eq!(code, 0, "{out}{err}");
    for t in ["moved", "old-1", "old-2"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ci/app") && l.contains(t) && l.ends_with("deleted")),
            "{out}"
        );
    }
    let gone: Vec<_> = ["moved", "old-1", "old-2"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    let expected: Vec<_> = before
        .iter()
        .filter(|(r, t, _)| !(r == "ci/app" && gone.contains(t)))
        .cloned()
        .collect();
    assert_eq!(all_tags(&registry.storage), expected);
    // Each deletion audited, as a tag delete by retention.
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["reason"] == "retention")
        .collect();
    let mut audited: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["repository"].as_str().unwrap(),
                l["reference"].as_str().unwrap(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    audited.sort();
    assert_eq!(
        audited,
        [
            ("delete", "ci/app", "moved", 202),
            ("delete", "ci/app", "old-1", 202),
            ("delete", "ci/app", "old-2", 202)
        ]
    );
    // v1.0 and stable shared old-1's digest: they still pull.
    let dir = tempfile::tempdir().unwrap();
    for t in ["v1.0", "stable"] {
        copy(
            &format!("docker://{}/ci/app:{t}", regate.host),
            &format!("oci:{}:{t}", dir.path().join(t).display()),
            trust,
            false,
        );
    }
    let history: Value = admin
        .get(format!("{}/admin/retention", regate.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["runs"].as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history["runs"][0]["deleted"], 3);
    assert_eq!(history["runs"][0]["failed"], 0);

    // Restorable.
    let r = c
        .post(format!("{}/v2/ci/app/_regate/restore/old-1", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        storage::tags(&registry.storage, "ci/app").contains(&("old-1".into(), a.digest.clone()))
    );

    // The fraction guard gives way only when forced.
    let v = post(
        &admin,
        &regate.admin_url,
        json!({"repositories": ["ci/big"]}),
    )
    .await;
    assert_eq!(v["deleted"], 0, "{v:#}");
    assert_eq!(storage::tags(&registry.storage, "ci/big").len(), 5);
    let v = post(
        &admin,
        &regate.admin_url,
        json!({"repositories": ["ci/big"], "force": true}),
    )
    .await;
    assert_eq!(v["deleted"], 3, "{v:#}");
    let left: Vec<String> = storage::tags(&registry.storage, "ci/big")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(left, ["a1", "a2"]);
    // A re-push through regate takes the date of regate's record.
    d.push(&c, &regate.url, "ci/big", "a5").await;
    let v = post(
        &admin,
        &regate.admin_url,
        json!({"dry_run": true, "repositories": ["ci/big"]}),
    )
    .await;
    let a5 = v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["tag"] == "a5")
        .unwrap()
        .clone();
    assert_eq!(a5["date_source"], "regate", "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_storage_dates_come_from_the_image_and_a_failed_deletion_exits_1() {
    // Deletes disabled upstream: every deletion of the run fails.
    let registry = Registry::start_with(RegistryOptions {
        delete_enabled: false,
    });
    let rules =
        "[[retention]]\nrepository = \"app\"\nolder_than = \"5d\"\nmax_delete_fraction = 1\n";
    let regate = Regate::start_with(&registry.url, rules).await;
    let c = regate.client();
    let direct = reqwest::Client::new();
    // The test images' configs say "created": "2026-11-23T00:00:00Z".
    let created = 1_795_392_000;
    Image::oci("ret-built", 500)
        .push(&direct, &registry.url, "app", "built")
        .await;
    let index = Image::oci_index("ret-multi", &["amd64", "arm64"]);
    index.push(&direct, &registry.url, "app", "multi").await;
    Image::oci("ret-fresh", 500)
        .push(&c, &regate.url, "app", "fresh")
        .await;

    let admin = reqwest::Client::new();
    let plan = post(&admin, &regate.admin_url, json!({"dry_run": true})).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let rule = "retention[0] (app)";
    assert_eq!(
        rows(
            &plan["delete"],
            &["tag", "rule", "date_source", "pushed_at"]
        ),
        [
            ["built", rule, "image_created", &created.to_string()],
            ["multi", rule, "image_created", &created.to_string()],
        ],
        "{plan:#}"
    );
    let age = plan["delete"][0]["age_secs"].as_i64().unwrap();
    assert!((now - created - age).abs() <= 5, "{age}");
    assert_eq!(
        rows(&plan["keep"], &["tag", "rule", "date_source"]),
        [["fresh", rule, "regate"]],
        "{plan:#}"
    );
    let reason = plan["keep"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("pushed ") && reason.ends_with("s ago, not older than 5d"),
        "{reason}"
    );

    // Not confirmed: nothing happens, exit 1.
    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["retention", "apply", "--admin", &regate.admin_url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("Delete these 2 tags? [y/N]"), "{stdout}");
    assert!(
        stderr.contains("not confirmed; nothing was deleted"),
        "{stderr}"
    );

    // Every deletion fails: a FAILED row each, exit 1, the tags stay.
    let (code, out, err) = cli(&["retention", "apply", "--yes", "--admin", &regate.admin_url]);
    assert_eq!(code, 1, "{out}{err}");
    for t in ["built", "multi"] {
        assert!(
            out.lines().any(|l| l.starts_with("app")
                && l.contains(t)
                && l.contains("FAILED")
                && l.contains("deletes disabled")),
            "{out}"
        );
    }
    assert!(err.contains("2 of 2 deletions failed"), "{err}");
    let mut left: Vec<String> = storage::tags(&registry.storage, "app")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    left.sort();
    assert_eq!(left, ["built", "fresh", "multi"]);
    let history: Value = admin
        .get(format!("{}/admin/retention", regate.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["runs"][0]["failed"], 2, "{history:#}");
    assert_eq!(history["runs"][0]["deleted"], 0, "{history:#}");
}

/// The runs of the history, once it holds one with a deletion (within 15 s).
async fn runs_once_deleted(admin_url: &str, path: &str) -> Vec<Value> {
    let c = reqwest::Client::new();
    for _ in 0..150 {
        let v: Value = c
            .get(format!("{admin_url}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        if runs.iter().any(|r| r["deleted"].as_i64() > Some(0)) {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no scheduled run deleted anything within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_on_their_own_and_before_scheduled_gc() {
    let registry = Registry::start();
    let (a, b) = (Image::oci("sched-a", 500), Image::oci("sched-b", 500));
    for repo in ["sched/app", "gcsched/app"] {
        push_direct(&registry, &a, repo, "old", 40).await;
        push_direct(&registry, &b, repo, "new", 1).await;
    }
    let root = registry.storage.display().to_string();
    let left = |repo: &str| -> Vec<String> {
        storage::tags(&registry.storage, repo)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    };

    // Its own schedule (every second).
    let regate = Regate::start_with(
        &registry.url,
        &format!("[gc]\nstorage_root = {root:?}\n[[retention]]\nrepository = \"sched/*\"\nolder_than = \"30d\"\n[retention_schedule]\nschedule = \"* * * * * *\"\n"),
    )
    .await;
    let runs = runs_once_deleted(&regate.admin_url, "/admin/retention").await;
    assert!(runs.iter().all(|r| r["account"] == "schedule"), "{runs:?}");
    assert_eq!(
        runs.iter()
            .map(|r| r["deleted"].as_i64().unwrap())
            .sum::<i64>(),
        1
    );
    assert_eq!(left("sched/app"), ["new"]);
    assert_eq!(left("gcsched/app").len(), 2, "not this rule's");
    regate.stop().await;

    // Just before each scheduled GC.
    let regate = Regate::start_with(
        &registry.url,
        &format!("[gc]\nstorage_root = {root:?}\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\n[[retention]]\nrepository = \"gcsched/*\"\nolder_than = \"30d\"\n[retention_schedule]\nbefore_gc = true\n"),
    )
    .await;
    let runs = runs_once_deleted(&regate.admin_url, "/admin/retention").await;
    assert_eq!(
        runs.iter()
            .map(|r| r["deleted"].as_i64().unwrap())
            .sum::<i64>(),
        1
    );
    assert_eq!(left("gcsched/app"), ["new"]);
    let gc: Value = reqwest::get(format!("{}/admin/gc", regate.admin_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deleted_at = runs.iter().find(|r| r["deleted"] == 1).unwrap()["finished_at"]
        .as_i64()
        .unwrap();
    // A GC run was started after that retention run (at the same scheduled time).
    let mut after = false;
    for _ in 0..100 {
        let gc: Value = reqwest::get(format!("{}/admin/gc", regate.admin_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        after = gc["history"].as_array().into_iter().flatten().any(|r| {
            r["trigger"] == "schedule"
                && r["started_at_ms"]
                    .as_i64()
                    .is_some_and(|s| s / 1000 >= deleted_at)
        });
        if after {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after, "{gc:#}\n{runs:#?}");
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_again_after_the_plan_is_left_alone() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let c = regate.client();
    let (a, b) = (Image::oci("again-a", 500), Image::oci("again-b", 500));
    a.push(&c, &regate.url, "again/app", "t1").await;
    a.push(&c, &regate.url, "again/app", "t2").await;
    // Planned at a; t1 is pushed again (b) before the deletion runs.
    b.push(&c, &regate.url, "again/app", "t1").await;
    let tags = &regate.server.as_ref().unwrap().app.tags;
    let expect = [("t1", &a.digest), ("t2", &a.digest)]
        .into_iter()
        .map(|(t, d)| (t.to_owned(), d.clone()))
        .collect();
    let repo = regate::route::RepoName::parse("again/app").unwrap();
    let names: Vec<_> = ["t1", "t2"]
        .iter()
        .map(|t| regate::route::Tag::parse(t).unwrap())
        .collect();
    let mut out = tags
        .delete_many_expecting(&repo, &names, "test", Some(expect))
        .await;
    let (t2, second) = out.pop().unwrap();
    assert!(t2 == "t2" && second.is_ok(), "{second:?}");
    let (t1, first) = out.pop().unwrap();
    assert_eq!(t1, "t1");
    let err = first.unwrap_err();
    assert!(
        matches!(err, regate::tag_delete::TagDeleteError::Moved { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("it was left alone"), "{err}");
    assert_eq!(regate::error::RegistryError::from(err).status, 409);
    assert_eq!(
        storage::tags(&registry.storage, "again/app"),
        [("t1".to_owned(), b.digest.clone())]
    );
}
