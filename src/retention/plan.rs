//! The retention plan: a pure function of the rules, the protected tags, the
//! tags of each repository with their dates, and the time. No I/O: what it
//! is given is gathered by `dates`, what it decides is carried out by
//! `apply`.
//!
//! Per repository, the rules whose glob matches apply in file order. A tag
//! matched by `[[protect]]` is kept. A rule *selects* the tags its `tags`
//! regex matches (all by default); among them it *keeps* those matching
//! `keep_tags`, the `keep_last` most recently pushed (a tag without a date
//! counts as newest) and those pulled within `keep_pulled_within`, and makes
//! the others *candidates* when they were pushed longer ago than
//! `older_than` (never when the push date is unknown; always without
//! `older_than`). A tag is deleted when it is a candidate of a rule and no
//! rule keeps it; the plan names the first rule (file order) of each. A
//! repository whose deletions would exceed the smallest
//! `max_delete_fraction` of its rules is skipped, unless forced.

use std::collections::HashSet;

use serde::Serialize;

use crate::config::retention::RetentionRule;
use crate::protect::Protections;

/// Where a push date came from, most reliable first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DateSource {
    /// regate's record of the manifest PUT by tag.
    Regate,
    /// The modification time of the tag's link in the registry's storage.
    Storage,
    /// The image config's `created` (an index: its newest child's).
    ImageCreated,
}

impl DateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DateSource::Regate => "regate",
            DateSource::Storage => "storage",
            DateSource::ImageCreated => "image_created",
        }
    }
}

/// One tag and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    pub tag: String,
    pub digest: String,
    /// When it was pushed (seconds since the epoch) and how that is known.
    pub pushed: Option<(i64, DateSource)>,
    /// regate's record of its last pull.
    pub last_pull: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFacts {
    pub repository: String,
    pub tags: Vec<TagFacts>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delete {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// The rule that made it a candidate.
    pub rule: String,
    pub reason: String,
    pub pushed_at: Option<i64>,
    pub age_secs: Option<i64>,
    pub date_source: Option<DateSource>,
    pub last_pull: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keep {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// The rule that keeps it (`-` when no rule makes it a candidate).
    pub rule: String,
    pub reason: String,
    pub pushed_at: Option<i64>,
    pub date_source: Option<DateSource>,
    pub last_pull: Option<i64>,
}

/// A repository the fraction guard skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub repository: String,
    pub tags: usize,
    pub would_delete: usize,
    pub max_delete_fraction: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub delete: Vec<Delete>,
    pub keep: Vec<Keep>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
}

/// "3d 4h" for a number of seconds: the largest unit, and the next one
/// when it is not zero.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0) as u64;
    let units = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)];
    let i = units
        .iter()
        .position(|(_, size)| secs >= *size)
        .unwrap_or(3);
    let (name, size) = units[i];
    let mut s = format!("{}{name}", secs / size);
    if let Some((next, next_size)) = units.get(i + 1) {
        let rest = secs % size / next_size;
        if rest > 0 {
            s.push_str(&format!(" {rest}{next}"));
        }
    }
    s
}

fn human(d: std::time::Duration) -> String {
    age(d.as_secs() as i64)
}

/// The plan for `repos` at time `now` (seconds since the epoch); `force`
/// disables the fraction guard.
pub fn plan(
    rules: &[RetentionRule],
    protect: &Protections,
    repos: &[RepoFacts],
    now: i64,
    force: bool,
) -> Plan {
    let mut out = Plan::default();
    for r in rules {
        if !repos
            .iter()
            .any(|f| r.repository.matches(&f.repository, None))
        {
            out.warnings.push(format!(
                "{} matches no repository; check its repository glob",
                r.name()
            ));
        }
    }
    for facts in repos {
        let here: Vec<&RetentionRule> = rules
            .iter()
            .filter(|r| r.repository.matches(&facts.repository, None))
            .collect();
        if here.is_empty() {
            continue;
        }
        let (deletes, keeps) = plan_repo(&here, protect, facts, now);
        let limit = here
            .iter()
            .map(|r| r.max_delete_fraction)
            .fold(1.0_f64, f64::min);
        let total = facts.tags.len();
        if !force && !deletes.is_empty() && deletes.len() as f64 > limit * total as f64 {
            out.skipped.push(Skipped {
                repository: facts.repository.clone(),
                tags: total,
                would_delete: deletes.len(),
                max_delete_fraction: limit,
            });
            let why = format!(
                "repository skipped: {} of its {total} tags would go, more than max_delete_fraction {limit} (force to delete anyway)",
                deletes.len()
            );
            out.keep.extend(deletes.into_iter().map(|d| Keep {
                repository: d.repository,
                tag: d.tag,
                digest: d.digest,
                rule: "max_delete_fraction".into(),
                reason: why.clone(),
                pushed_at: d.pushed_at,
                date_source: d.date_source,
                last_pull: d.last_pull,
            }));
        } else {
            out.delete.extend(deletes);
        }
        out.keep.extend(keeps);
    }
    let key = |r: &str, t: &str| (r.to_owned(), t.to_owned());
    out.delete.sort_by_key(|d| key(&d.repository, &d.tag));
    out.keep.sort_by_key(|k| key(&k.repository, &k.tag));
    out
}

fn plan_repo(
    rules: &[&RetentionRule],
    protect: &Protections,
    facts: &RepoFacts,
    now: i64,
) -> (Vec<Delete>, Vec<Keep>) {
    let repo = facts.repository.as_str();
    let selects =
        |r: &RetentionRule, t: &TagFacts| r.tags.as_ref().is_none_or(|re| re.is_match(&t.tag));
    // Per rule, the keep_last newest of its selection.
    let newest: Vec<HashSet<&str>> = rules
        .iter()
        .map(|r| {
            let Some(n) = r.keep_last else {
                return HashSet::new();
            };
            let mut sel: Vec<&TagFacts> = facts.tags.iter().filter(|t| selects(r, t)).collect();
            sel.sort_by(|a, b| {
                let date = |t: &TagFacts| t.pushed.map_or(i64::MAX, |p| p.0);
                date(b).cmp(&date(a)).then_with(|| a.tag.cmp(&b.tag))
            });
            sel.into_iter().take(n).map(|t| t.tag.as_str()).collect()
        })
        .collect();
    let (mut deletes, mut keeps) = (Vec::new(), Vec::new());
    for t in &facts.tags {
        let keep = |rule: String, reason: String| Keep {
            repository: repo.to_owned(),
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            rule,
            reason,
            pushed_at: t.pushed.map(|p| p.0),
            date_source: t.pushed.map(|p| p.1),
            last_pull: t.last_pull,
        };
        if let Some(p) = protect.protecting(repo, &t.tag) {
            keeps.push(keep(p.name(), "protected tag".into()));
            continue;
        }
        let kept_by = rules.iter().zip(&newest).find_map(|(r, newest)| {
            if !selects(r, t) {
                return None;
            }
            if let Some(re) = r.keep_tags.iter().find(|re| re.is_match(&t.tag)) {
                return Some((r, format!("matches keep_tags {:?}", re.as_str())));
            }
            if newest.contains(t.tag.as_str()) {
                let n = r.keep_last.unwrap_or(0);
                return Some((
                    r,
                    format!("one of the {n} most recently pushed (keep_last)"),
                ));
            }
            match (r.keep_pulled_within, t.last_pull) {
                (Some(w), Some(p)) if now - p <= w.as_secs() as i64 => Some((
                    r,
                    format!(
                        "pulled {} ago, within keep_pulled_within {}",
                        age(now - p),
                        human(w)
                    ),
                )),
                _ => None,
            }
        });
        if let Some((r, why)) = kept_by {
            keeps.push(keep(r.name(), why));
            continue;
        }
        let candidate_of = rules.iter().find_map(|r| {
            if !selects(r, t) {
                return None;
            }
            match (r.older_than, t.pushed) {
                (None, _) => Some((
                    r,
                    match r.keep_last {
                        Some(n) => format!("beyond the {n} most recently pushed (keep_last)"),
                        None => "selected by the rule".into(),
                    },
                )),
                (Some(d), Some((at, _))) if now - at > d.as_secs() as i64 => Some((
                    r,
                    format!("pushed {} ago, older than {}", age(now - at), human(d)),
                )),
                _ => None,
            }
        });
        match candidate_of {
            Some((r, reason)) => deletes.push(Delete {
                repository: repo.to_owned(),
                tag: t.tag.clone(),
                digest: t.digest.clone(),
                rule: r.name(),
                reason,
                pushed_at: t.pushed.map(|p| p.0),
                age_secs: t.pushed.map(|p| now - p.0),
                date_source: t.pushed.map(|p| p.1),
                last_pull: t.last_pull,
            }),
            None => {
                let selecting = rules.iter().find(|r| selects(r, t));
                let (rule, reason) = match (selecting, t.pushed) {
                    (None, _) => ("-".to_owned(), "no rule selects it".to_owned()),
                    (Some(r), None) => (r.name(), "push date unknown".to_owned()),
                    (Some(r), Some((at, _))) => (
                        r.name(),
                        format!(
                            "pushed {} ago, not older than {}",
                            age(now - at),
                            r.older_than.map(human).unwrap_or_default()
                        ),
                    ),
                };
                keeps.push(keep(rule, reason));
            }
        }
    }
    (deletes, keeps)
}

#[cfg(test)]
mod tests;
