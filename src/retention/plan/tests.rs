use super::*;
use crate::config::Settings;

const DAY: i64 = 86400;
const NOW: i64 = 1_000 * DAY;

fn config(text: &str) -> (Vec<RetentionRule>, Protections) {
    let s = Settings::from_toml(
        &format!("[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n{text}"),
        "t",
        std::iter::empty(),
    )
    .unwrap();
    (s.retention, Protections::new(s.protect))
}

/// `(tag, days since push or None, days since pull or None)`.
fn repo(name: &str, tags: &[(&str, Option<i64>, Option<i64>)]) -> RepoFacts {
    RepoFacts {
        repository: name.into(),
        tags: tags
            .iter()
            .map(|(t, pushed, pulled)| TagFacts {
                tag: (*t).into(),
                digest: format!("sha256:{t}"),
                pushed: pushed.map(|d| (NOW - d * DAY, DateSource::Storage)),
                last_pull: pulled.map(|d| NOW - d * DAY),
            })
            .collect(),
    }
}

fn deleted(p: &Plan) -> Vec<(String, String, String)> {
    p.delete
        .iter()
        .map(|d| (d.repository.clone(), d.tag.clone(), d.rule.clone()))
        .collect()
}

fn kept(p: &Plan) -> Vec<(String, String, String)> {
    p.keep
        .iter()
        .map(|k| (k.tag.clone(), k.rule.clone(), k.reason.clone()))
        .collect()
}

fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

const CI: &str = "[[retention]]\nrepository = \"ci/*\"\nkeep_last = 2\nkeep_tags = [\"^v\"]\nolder_than = \"30d\"\n";

fn ci_repo() -> RepoFacts {
    repo(
        "ci/app",
        &[
            ("v1", Some(100), None),
            ("a", Some(90), None),
            ("b", Some(60), None),
            ("c", Some(40), None),
            ("d", Some(10), None),
            ("e", None, None),
        ],
    )
}

#[test]
fn keep_last_keep_tags_and_older_than() {
    let (rules, protect) = config(CI);
    let p = plan(
        &rules,
        &protect,
        &[ci_repo(), repo("other", &[("x", Some(999), None)])],
        NOW,
        false,
    );
    let r = "retention[0] (ci/*)";
    assert_eq!(
        deleted(&p),
        [
            t("ci/app", "a", r),
            t("ci/app", "b", r),
            t("ci/app", "c", r)
        ]
    );
    assert_eq!(p.delete[0].reason, "pushed 90d ago, older than 30d");
    assert_eq!(p.delete[0].age_secs, Some(90 * DAY));
    assert_eq!(p.delete[0].date_source, Some(DateSource::Storage));
    assert_eq!(
        kept(&p),
        [
            t("d", r, "one of the 2 most recently pushed (keep_last)"),
            t("e", r, "one of the 2 most recently pushed (keep_last)"),
            t("v1", r, "matches keep_tags \"^v\""),
        ],
        "a tag without a date counts as newest; `other` is no rule's"
    );
    assert!(p.skipped.is_empty() && p.warnings.is_empty());
}

#[test]
fn the_fraction_guard_skips_a_repository_unless_forced() {
    let (rules, protect) = config(&format!("{CI}max_delete_fraction = 0.4\n"));
    let p = plan(&rules, &protect, &[ci_repo()], NOW, false);
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(
        p.skipped,
        [Skipped {
            repository: "ci/app".into(),
            tags: 6,
            would_delete: 3,
            max_delete_fraction: 0.4
        }]
    );
    assert_eq!(
        p.keep
            .iter()
            .filter(|k| k.rule == "max_delete_fraction")
            .count(),
        3
    );
    let forced = plan(&rules, &protect, &[ci_repo()], NOW, true);
    assert_eq!(forced.delete.len(), 3);
    assert!(forced.skipped.is_empty());
}

#[test]
fn keeping_wins_over_any_rule_and_protected_tags_stay() {
    let (rules, protect) = config(
        "[[retention]]\nrepository = \"*\"\nkeep_tags = [\"^latest$\"]\nolder_than = \"1d\"\n[[retention]]\nrepository = \"ci/*\"\ntags = \"^pr-\"\nolder_than = \"7d\"\nkeep_pulled_within = \"3d\"\nmax_delete_fraction = 1\n[[protect]]\nrepository = \"ci/*\"\ntags = \"^rel$\"\n",
    );
    let facts = repo(
        "ci/x",
        &[
            ("latest", Some(100), None),
            ("pr-1", Some(10), Some(1)),
            ("pr-2", Some(10), Some(5)),
            ("main", Some(2), None),
            ("rel", Some(300), None),
            ("new", Some(0), None),
            ("undated", None, None),
        ],
    );
    let p = plan(&rules, &protect, &[facts], NOW, false);
    let (all, pr) = ("retention[0] (*)", "retention[1] (ci/*)");
    assert_eq!(
        deleted(&p),
        [t("ci/x", "main", all), t("ci/x", "pr-2", all)]
    );
    assert_eq!(
        kept(&p),
        [
            t("latest", all, "matches keep_tags \"^latest$\""),
            t("new", all, "pushed 0s ago, not older than 1d"),
            t("pr-1", pr, "pulled 1d ago, within keep_pulled_within 3d"),
            t("rel", "protect[0] (ci/* ^rel$)", "protected tag"),
            t("undated", all, "push date unknown"),
        ]
    );
}

#[test]
fn unselected_tags_and_rules_matching_nothing() {
    let (rules, protect) = config(
        "[[retention]]\nrepository = \"pr/*\"\ntags = \"^pr-\"\nkeep_last = 1\n[[retention]]\nrepository = \"nothing/*\"\nolder_than = \"1d\"\n",
    );
    let facts = repo(
        "pr/app",
        &[
            ("pr-1", Some(3), None),
            ("pr-2", Some(2), None),
            ("pr-3", Some(1), None),
            ("main", Some(50), None),
        ],
    );
    let p = plan(&rules, &protect, &[facts], NOW, false);
    let r = "retention[0] (pr/*)";
    assert_eq!(
        deleted(&p),
        [t("pr/app", "pr-1", r), t("pr/app", "pr-2", r)]
    );
    assert_eq!(
        p.delete[0].reason,
        "beyond the 1 most recently pushed (keep_last)"
    );
    assert_eq!(
        kept(&p),
        [
            t("main", "-", "no rule selects it"),
            t("pr-3", r, "one of the 1 most recently pushed (keep_last)"),
        ]
    );
    assert_eq!(
        p.warnings,
        ["retention[1] (nothing/*) matches no repository; check its repository glob"]
    );
}

#[test]
fn ages_read_as_two_units() {
    assert_eq!(age(0), "0s");
    assert_eq!(age(59), "59s");
    assert_eq!(age(3 * DAY + 4 * 3600 + 5), "3d 4h");
    assert_eq!(age(90 * 60), "1h 30m");
    assert_eq!(age(90 * DAY + 2), "90d", "seconds do not follow days");
}
