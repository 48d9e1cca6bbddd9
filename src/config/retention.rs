//! The `[[retention]]` rules (which tags a retention run deletes), the
//! `[[protect]]` rules (tags nobody may move or delete) and the
//! `[retention_schedule]` (when runs start by themselves).
//!
//! Owns the raw keys of these sections, their defaults and their validation
//! into [`RetentionRule`], [`ProtectRule`] and [`RetentionSchedule`]; every problem names the key
//! (`retention[1].keep_tags[0]`) and its value. What the rules mean at run
//! time is `crate::retention` (plan) and `crate::protect`.

use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::duration::{self, RawDuration};
use super::problem::Problem;
use crate::rules::Pattern;

/// Defaults of the rules.
pub mod defaults {
    /// A run deleting more than this share of a repository's tags skips it.
    pub const MAX_DELETE_FRACTION: f64 = 0.5;
    pub const IMMUTABLE: bool = true;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetentionRule {
    /// Repository glob, as in `[[acl]]` (without `${account}`).
    pub repository: String,
    /// Keep the N most recently pushed tags this rule selects.
    pub keep_last: Option<i64>,
    /// Regexes of tags this rule never deletes.
    pub keep_tags: Option<Vec<String>>,
    /// Only tags pushed longer ago are candidates.
    pub older_than: Option<RawDuration>,
    /// Regex of the tags this rule looks at (default: every tag).
    pub tags: Option<String>,
    /// Keep tags pulled this recently.
    pub keep_pulled_within: Option<RawDuration>,
    /// The largest share of a repository's tags one run may delete.
    pub max_delete_fraction: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtect {
    pub repository: String,
    /// Regex of the protected tags.
    pub tags: String,
    /// Also refuse moving the tag to another manifest (default true).
    pub immutable: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetentionSchedule {
    /// A cron expression (5 fields, or 6 with seconds first), in UTC.
    pub schedule: Option<String>,
    /// Also run retention just before each scheduled GC.
    pub before_gc: Option<bool>,
}

/// When retention runs by itself.
#[derive(Debug, Clone, Default)]
pub struct RetentionSchedule {
    pub schedule: Option<super::gc::GcSchedule>,
    pub before_gc: bool,
}

/// One `[[retention]]` rule.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// Its place in the file (`retention[index]`).
    pub index: usize,
    pub repository: Pattern,
    pub keep_last: Option<usize>,
    pub keep_tags: Vec<Regex>,
    pub older_than: Option<Duration>,
    pub tags: Option<Regex>,
    pub keep_pulled_within: Option<Duration>,
    pub max_delete_fraction: f64,
}

impl RetentionRule {
    /// `retention[0] (ci/*)`: how plans and messages name the rule.
    pub fn name(&self) -> String {
        format!("retention[{}] ({})", self.index, self.repository.as_str())
    }
}

/// One `[[protect]]` rule.
#[derive(Debug, Clone)]
pub struct ProtectRule {
    pub index: usize,
    pub repository: Pattern,
    pub tags: Regex,
    pub immutable: bool,
}

impl ProtectRule {
    pub fn name(&self) -> String {
        format!(
            "protect[{}] ({} {})",
            self.index,
            self.repository.as_str(),
            self.tags.as_str()
        )
    }
}

fn regex(key: &str, text: &str, problems: &mut Vec<Problem>) -> Option<Regex> {
    match Regex::new(text) {
        Ok(r) => Some(r),
        Err(e) => {
            let why = e.to_string().lines().last().unwrap_or_default().to_owned();
            problems.push(Problem::new(
                key,
                format!("{text:?} is not a regular expression ({why}); write e.g. \"^v[0-9]\" or \"^latest$\""),
            ));
            None
        }
    }
}

fn pattern(key: &str, text: &str, problems: &mut Vec<Problem>) -> Option<Pattern> {
    match Pattern::compile(text, false) {
        Ok(p) => Some(p),
        Err(m) => {
            problems.push(Problem::new(
                key,
                format!("{text:?}: {m}; write a glob as in [[acl]], e.g. \"ci/*\""),
            ));
            None
        }
    }
}

/// Validates the `[[retention]]` rules, adding every problem to `problems`.
pub(super) fn validate_retention(
    raw: Vec<RawRetentionRule>,
    problems: &mut Vec<Problem>,
) -> Vec<RetentionRule> {
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("retention[{i}].{k}");
        let before = problems.len();
        let repository = pattern(&key("repository"), &r.repository, problems);
        let keep_last = match r.keep_last {
            None => None,
            Some(n) if n >= 0 => Some(n as usize),
            Some(n) => {
                problems.push(Problem::new(
                    key("keep_last"),
                    format!("{n} is negative; write how many tags to keep, e.g. 10"),
                ));
                None
            }
        };
        let keep_tags: Vec<Regex> = r
            .keep_tags
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(j, t)| regex(&format!("retention[{i}].keep_tags[{j}]"), t, problems))
            .collect();
        let tags = r
            .tags
            .as_deref()
            .and_then(|t| regex(&key("tags"), t, problems));
        let mut dur = |k: &str, v: Option<&RawDuration>| {
            v.map(|v| duration::read(&key(k), Some(v), Duration::ZERO, Duration::ZERO, problems))
        };
        let older_than = dur("older_than", r.older_than.as_ref());
        let keep_pulled_within = dur("keep_pulled_within", r.keep_pulled_within.as_ref());
        let max_delete_fraction = r
            .max_delete_fraction
            .unwrap_or(defaults::MAX_DELETE_FRACTION);
        if !(max_delete_fraction > 0.0 && max_delete_fraction <= 1.0) {
            problems.push(Problem::new(
                key("max_delete_fraction"),
                format!("{max_delete_fraction} is out of range; write a share above 0 and at most 1, e.g. 0.5"),
            ));
        }
        if r.older_than.is_none() && r.keep_last.is_none() {
            problems.push(Problem::new(
                format!("retention[{i}]"),
                format!("the rule for {:?} sets neither older_than nor keep_last, so it would delete every tag it selects; set older_than (e.g. \"30d\") or keep_last (e.g. 10)", r.repository),
            ));
        }
        if problems.len() > before {
            continue;
        }
        if let Some(repository) = repository {
            out.push(RetentionRule {
                index: i,
                repository,
                keep_last,
                keep_tags,
                older_than,
                tags,
                keep_pulled_within,
                max_delete_fraction,
            });
        }
    }
    out
}

/// Validates `[retention_schedule]`; `rules`: there are `[[retention]]`
/// rules; `gc_scheduled`: `gc.schedule` is set.
pub(super) fn validate_schedule(
    raw: RawRetentionSchedule,
    rules: bool,
    gc_scheduled: bool,
    problems: &mut Vec<Problem>,
) -> RetentionSchedule {
    let schedule = raw.schedule.and_then(|expr| {
        match croner::parser::CronParser::new().parse(&expr) {
            Ok(cron) => Some(super::gc::GcSchedule {
                expression: expr,
                cron,
            }),
            Err(e) => {
                problems.push(Problem::new(
                    "retention_schedule.schedule",
                    format!("{expr:?} is not a cron expression ({e}); e.g. \"0 2 * * *\" for 02:00 UTC daily"),
                ));
                None
            }
        }
    });
    let before_gc = raw.before_gc.unwrap_or(false);
    if before_gc && !gc_scheduled {
        problems.push(Problem::new(
            "retention_schedule.before_gc",
            "runs retention just before scheduled GC, but gc.schedule is not set; set it, or use retention_schedule.schedule",
        ));
    }
    if (before_gc || schedule.is_some()) && !rules {
        problems.push(Problem::new(
            "retention_schedule",
            "schedules retention runs, but there are no [[retention]] rules; add rules or remove [retention_schedule]",
        ));
    }
    RetentionSchedule {
        schedule,
        before_gc,
    }
}

/// Validates the `[[protect]]` rules, adding every problem to `problems`.
pub(super) fn validate_protect(
    raw: Vec<RawProtect>,
    problems: &mut Vec<Problem>,
) -> Vec<ProtectRule> {
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let repository = pattern(&format!("protect[{i}].repository"), &r.repository, problems);
        let tags = regex(&format!("protect[{i}].tags"), &r.tags, problems);
        if let (Some(repository), Some(tags)) = (repository, tags) {
            out.push(ProtectRule {
                index: i,
                repository,
                tags,
                immutable: r.immutable.unwrap_or(defaults::IMMUTABLE),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Settings;

    const BASE: &str = "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n";

    fn problems(extra: &str) -> Vec<(String, String)> {
        match Settings::from_toml(&format!("{BASE}{extra}"), "t.toml", std::iter::empty()) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems()
                .into_iter()
                .map(|p| (p.key, p.message))
                .collect(),
        }
    }

    #[test]
    fn good_rules_are_read_in_order() {
        let s = Settings::from_toml(
            &format!("{BASE}[[retention]]\nrepository = \"ci/*\"\nkeep_last = 10\nkeep_tags = [\"^v\", \"^latest$\"]\nolder_than = \"30d\"\n[[retention]]\nrepository = \"pr/*\"\ntags = \"^pr-\"\nolder_than = \"7d\"\nkeep_pulled_within = \"14d\"\nmax_delete_fraction = 0.9\n[[protect]]\nrepository = \"*\"\ntags = \"^v\"\n"),
            "t.toml",
            std::iter::empty(),
        )
        .unwrap();
        let r = &s.retention;
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name(), "retention[0] (ci/*)");
        assert_eq!(r[0].keep_last, Some(10));
        assert_eq!(r[0].keep_tags.len(), 2);
        assert_eq!(r[0].older_than.unwrap().as_secs(), 30 * 86400);
        assert_eq!(r[0].max_delete_fraction, 0.5);
        assert_eq!(r[1].tags.as_ref().unwrap().as_str(), "^pr-");
        assert_eq!(r[1].keep_pulled_within.unwrap().as_secs(), 14 * 86400);
        assert_eq!(r[1].max_delete_fraction, 0.9);
        assert!(s.protect[0].immutable, "immutable by default");
    }

    #[test]
    fn every_bad_value_is_named_with_its_key() {
        let got = problems("[[retention]]\nrepository = \"\"\nkeep_last = -1\nkeep_tags = [\"^v\", \"(\"]\nolder_than = \"soon\"\ntags = \"[\"\nmax_delete_fraction = 1.5\n[[retention]]\nrepository = \"ci/*\"\n[[protect]]\nrepository = \"*\"\ntags = \"*v\"\n");
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "retention[0].repository",
                "retention[0].keep_last",
                "retention[0].keep_tags[1]",
                "retention[0].tags",
                "retention[0].older_than",
                "retention[0].max_delete_fraction",
                "retention[1]",
                "protect[0].tags",
            ],
            "{got:#?}"
        );
        assert!(got[2].1.contains("\"(\""), "{got:?}");
        assert!(got[4].1.contains("\"soon\""), "{got:?}");
        assert!(got[5].1.contains("1.5"), "{got:?}");
        assert!(
            got[6].1.contains("neither older_than nor keep_last"),
            "{got:?}"
        );
        assert!(got[7].1.contains("\"*v\""), "{got:?}");
    }

    #[test]
    fn the_schedule_is_checked() {
        let rule = "[[retention]]\nrepository = \"ci/*\"\nolder_than = \"30d\"\n";
        let got = problems(&format!(
            "[retention_schedule]\nschedule = \"sometimes\"\nbefore_gc = true\n{rule}"
        ));
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "retention_schedule.schedule",
                "retention_schedule.before_gc"
            ],
            "{got:?}"
        );
        assert!(got[0].1.contains("\"sometimes\""), "{got:?}");
        let got = problems("[retention_schedule]\nschedule = \"0 2 * * *\"\n");
        assert_eq!(got[0].0, "retention_schedule", "{got:?}");
        let s = Settings::from_toml(
            &format!("{BASE}[gc]\nschedule = \"0 3 * * *\"\ncommand = [\"true\"]\n[retention_schedule]\nschedule = \"*/5 * * * * *\"\nbefore_gc = true\n{rule}"),
            "t",
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(
            s.retention_schedule.schedule.unwrap().expression,
            "*/5 * * * * *"
        );
        assert!(s.retention_schedule.before_gc);
    }

    #[test]
    fn unknown_keys_are_named() {
        let got = problems("[[retention]]\nrepository = \"ci/*\"\nkeep_lats = 3\n[[protect]]\nrepository = \"*\"\ntags = \"^v\"\nimutable = true\n");
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["retention[0].keep_lats", "protect[0].imutable"],
            "{got:?}"
        );
        assert!(
            got[0].1.contains("did you mean `retention[0].keep_last`?"),
            "{got:?}"
        );
    }
}
