//! The summary line of a soak (`soak summary: ...`, which `scripts/soak`
//! prints) and the checks that the load did something, scaled with its
//! duration.

use super::gc_runs::GcProgress;
use super::ledger::{Counters, Ledger, TagState};

/// What the summary tells.
pub struct Outcome<'a> {
    pub seed: u64,
    pub load_secs: u64,
    pub ledger: &'a Ledger,
    /// GC runs of the load (the final run left out).
    pub runs: usize,
    pub gc: &'a GcProgress,
    pub fsck: &'a regate::fsck::Report,
    pub sampled: usize,
    pub problems: usize,
}

pub fn line(o: &Outcome) -> String {
    let (c, ledger, gc, report) = (&o.ledger.counters, o.ledger, o.gc, o.fsck);
    format!(
        "soak summary: seed {}, {} s of load; pushes acknowledged {}, failed {}; pulls {} (retries {}); deletes acknowledged {}, failed {}; kills {}; GC runs {} ({:?}; completed {}, attempts {}, resumed {}, repositories walked {}, longest walk {} ms, longest command {} ms); tags acknowledged at the end {}, deleted {}, uncertain {}; fsck: {} repositories, {} errors, {} warnings; sampled with skopeo {}; problems {}",
        o.seed,
        o.load_secs,
        Counters::get(&c.pushes_acked),
        Counters::get(&c.pushes_failed),
        Counters::get(&c.pulls),
        Counters::get(&c.pull_retries),
        Counters::get(&c.deletes_acked),
        Counters::get(&c.deletes_failed),
        Counters::get(&c.kills),
        o.runs,
        gc.statuses,
        gc.completed,
        gc.attempts,
        gc.resumed,
        gc.repositories_walked,
        gc.longest_walk_ms,
        gc.longest_command_ms,
        ledger.count(|s| matches!(s, TagState::Acked(_))),
        ledger.count(|s| matches!(s, TagState::Deleted(_))),
        ledger.count(|s| matches!(s, TagState::Uncertain(_))),
        report.repositories.len(),
        report.errors,
        report.warnings,
        o.sampled,
        o.problems,
    )
}

/// What a soak must get done per 100 s of load (scaled to its duration,
/// at least one of each).
pub struct Minimums {
    pub kills: u64,
    pub gc_completed: u64,
    pub pushes: u64,
    pub pulls: u64,
    pub deletes: u64,
}

/// It did something: work scales with the duration (`secs` of load asked).
pub fn assert_progress(secs: u64, mins: &Minimums, o: &Outcome, summary: &str) {
    let (c, gc) = (&o.ledger.counters, o.gc);
    let min = |per_100s: u64| (per_100s * secs / 100).max(1);
    assert!(
        Counters::get(&c.kills) >= min(mins.kills),
        "too few kills: {summary}"
    );
    // GC progress, whatever the machine's speed (a faster machine pushes
    // more, so each run has more to walk): kills cut runs short, but no
    // restart throws a run's work away (a run cut short is resumed, never
    // left interrupted), and runs get through their GC command.
    assert_eq!(
        gc.statuses.get("interrupted"),
        None,
        "a restart threw away a GC run's work: {summary}"
    );
    assert!(
        gc.completed >= min(mins.gc_completed),
        "no GC run completed: {summary}"
    );
    assert!(
        Counters::get(&c.pushes_acked) >= min(mins.pushes),
        "too few pushes: {summary}"
    );
    assert!(
        Counters::get(&c.pulls) >= min(mins.pulls),
        "too few pulls: {summary}"
    );
    assert!(
        Counters::get(&c.deletes_acked) >= min(mins.deletes),
        "too few deletes: {summary}"
    );
    assert!(o.sampled > 0, "nothing to sample: {summary}");
}
