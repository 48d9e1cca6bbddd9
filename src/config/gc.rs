//! The `[gc]` section: garbage collection, its schedule, untagged cleanup and
//! the write gate that keeps pushes safe while it runs.
//!
//! Owns the raw keys of the section ([`RawGc`]), their defaults and their
//! validation into [`GcSettings`]. Durations take the syntax of
//! `config::duration`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problem::Problem;

/// Defaults of the `[gc]` section.
pub mod defaults {
    pub const DRAIN_TIMEOUT_SECS: u64 = 60;
    pub const HOLD_TIMEOUT_SECS: u64 = 300;
    pub const RETRY_AFTER_SECS: u64 = 60;
    pub const PUSH_WINDOW_SECS: u64 = 30;
    /// Finished runs kept in the history (with their logs).
    pub const HISTORY_KEEP: usize = 500;
    pub const TIMEOUT_SECS: u64 = 3600;
}

pub use super::duration::RawDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGc {
    /// A cron expression (5 fields, or 6 with seconds first), in UTC.
    pub schedule: Option<String>,
    /// `"HH:MM-HH:MM"` (UTC): scheduled runs start only inside it, and their
    /// GC command is stopped when it ends.
    pub window: Option<String>,
    /// Scheduled runs also delete untagged manifests (safely for multi-arch).
    pub untagged: Option<bool>,
    /// The registry's storage root, for an external registry whose
    /// filesystem regate can read.
    pub storage_root: Option<String>,
    /// The GC command for an external registry, as an argv.
    pub command: Option<Vec<String>>,
    /// How long the GC command may run.
    pub timeout: Option<RawDuration>,
    /// `"hold"` (default) or `"reject"`.
    pub closed_writes: Option<String>,
    pub drain_timeout: Option<RawDuration>,
    pub hold_timeout: Option<RawDuration>,
    /// `Retry-After` sent with a refused write.
    pub retry_after: Option<RawDuration>,
    /// A repository counts as being pushed to while its last upload activity
    /// is at most this old.
    pub push_window: Option<RawDuration>,
    /// How many finished runs the history keeps (older ones and their logs
    /// are removed when a new run starts).
    pub history_keep: Option<usize>,
}

/// What happens to a write while the gate is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedWrites {
    /// Wait until the gate opens (503 after `hold_timeout`).
    Hold,
    /// 503 at once, with `Retry-After`.
    Reject,
}

/// A parsed `[gc] schedule`.
#[derive(Debug, Clone)]
pub struct GcSchedule {
    pub expression: String,
    pub cron: croner::Cron,
}

/// A daily time window, UTC, in minutes of the day; `end < start` wraps
/// past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcWindow {
    pub start: u32,
    pub end: u32,
}

impl GcWindow {
    pub fn parse(s: &str) -> Result<Self, String> {
        let hm = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let bad =
            || format!("{s:?} is not a window; write \"HH:MM-HH:MM\" in UTC, e.g. \"01:00-05:00\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{s:?} is empty; start and end must differ"));
        }
        Ok(GcWindow { start, end })
    }

    /// Time left in the window at `minute` (minute of the day, with seconds
    /// `second`), or None when outside it.
    pub fn remaining(&self, minute: u32, second: u32) -> Option<Duration> {
        let inside = if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        };
        if !inside {
            return None;
        }
        let left_min = (self.end + 24 * 60 - minute) % (24 * 60);
        Some(Duration::from_secs(
            u64::from(left_min) * 60 - u64::from(second.min(59)),
        ))
    }
}

#[derive(Debug, Clone)]
pub struct GcSettings {
    pub schedule: Option<GcSchedule>,
    pub window: Option<GcWindow>,
    pub untagged: bool,
    pub storage_root: Option<PathBuf>,
    pub command: Option<Vec<String>>,
    pub timeout: Duration,
    pub closed_writes: ClosedWrites,
    pub drain_timeout: Duration,
    pub hold_timeout: Duration,
    pub retry_after: Duration,
    pub push_window: Duration,
    pub history_keep: usize,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            schedule: None,
            window: None,
            untagged: false,
            storage_root: None,
            command: None,
            timeout: Duration::from_secs(defaults::TIMEOUT_SECS),
            closed_writes: ClosedWrites::Hold,
            drain_timeout: Duration::from_secs(defaults::DRAIN_TIMEOUT_SECS),
            hold_timeout: Duration::from_secs(defaults::HOLD_TIMEOUT_SECS),
            retry_after: Duration::from_secs(defaults::RETRY_AFTER_SECS),
            push_window: Duration::from_secs(defaults::PUSH_WINDOW_SECS),
            history_keep: defaults::HISTORY_KEEP,
        }
    }
}

/// Validates the section; `managed` says whether regate runs the registry
/// (which provides the GC command and the storage root).
pub(super) fn validate(raw: RawGc, managed: bool, problems: &mut Vec<Problem>) -> GcSettings {
    let d = GcSettings::default();
    let mut duration = |key: &str, v: Option<RawDuration>, default: Duration, min_ms: u64| {
        super::duration::read(
            key,
            v.as_ref(),
            default,
            Duration::from_millis(min_ms),
            problems,
        )
    };
    let timeout = duration("gc.timeout", raw.timeout, d.timeout, 1000);
    let drain_timeout = duration("gc.drain_timeout", raw.drain_timeout, d.drain_timeout, 0);
    let hold_timeout = duration("gc.hold_timeout", raw.hold_timeout, d.hold_timeout, 1000);
    let retry_after = duration("gc.retry_after", raw.retry_after, d.retry_after, 1000);
    let push_window = duration("gc.push_window", raw.push_window, d.push_window, 100);

    let history_keep = match raw.history_keep {
        Some(0) => {
            problems.push(Problem::new(
                "gc.history_keep",
                "must be at least 1 (the run in progress and the last result are always kept)",
            ));
            d.history_keep
        }
        Some(n) => n,
        None => d.history_keep,
    };
    let closed_writes = match raw.closed_writes.as_deref() {
        None | Some("hold") => ClosedWrites::Hold,
        Some("reject") => ClosedWrites::Reject,
        Some(other) => {
            problems.push(Problem::new(
                "gc.closed_writes",
                format!("{other:?} is not a mode; use \"hold\" (writes wait) or \"reject\" (503 with Retry-After)"),
            ));
            ClosedWrites::Hold
        }
    };
    let schedule = raw.schedule.and_then(|expr| {
        match croner::parser::CronParser::new().parse(&expr) {
            Ok(cron) => Some(GcSchedule {
                expression: expr,
                cron,
            }),
            Err(e) => {
                problems.push(Problem::new(
                    "gc.schedule",
                    format!("{expr:?} is not a cron expression ({e}); e.g. \"0 3 * * *\" for 03:00 UTC daily"),
                ));
                None
            }
        }
    });
    let window = raw.window.and_then(|w| match GcWindow::parse(&w) {
        Ok(w) => Some(w),
        Err(m) => {
            problems.push(Problem::new("gc.window", m));
            None
        }
    });
    if window.is_some() && schedule.is_none() {
        problems.push(Problem::new(
            "gc.window",
            "limits scheduled runs: set gc.schedule too, or remove gc.window",
        ));
    }
    let command = match raw.command {
        Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
            problems.push(Problem::new(
                "gc.command",
                "must be a non-empty argv, e.g. [\"docker\", \"exec\", \"registry\", \"registry\", \"garbage-collect\", \"/etc/docker/registry/config.yml\"]",
            ));
            None
        }
        other => other,
    };
    if managed && command.is_some() {
        problems.push(Problem::new(
            "gc.command",
            "is for an external registry; with [upstream.managed] regate runs the managed registry's own garbage-collect. Remove one of them",
        ));
    }
    if !managed && command.is_none() && schedule.is_some() {
        problems.push(Problem::new(
            "gc.schedule",
            "needs a GC command: set gc.command to the argv that runs garbage-collect for your registry, or use [upstream.managed]",
        ));
    }
    let storage_root = raw.storage_root.map(PathBuf::from);
    if let Some(root) = &storage_root {
        if !root.is_dir() {
            problems.push(Problem::new(
                "gc.storage_root",
                format!("{} is not a directory; point it at the registry's storage.filesystem.rootdirectory", root.display()),
            ));
        }
    }
    let untagged = raw.untagged.unwrap_or(false);
    if untagged && !managed && storage_root.is_none() {
        problems.push(Problem::new(
            "gc.untagged",
            "needs to read the registry's storage: set gc.storage_root to its storage.filesystem.rootdirectory, or use [upstream.managed]",
        ));
    }
    GcSettings {
        schedule,
        window,
        untagged,
        storage_root,
        command,
        timeout,
        closed_writes,
        drain_timeout,
        hold_timeout,
        retry_after,
        push_window,
        history_keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, managed: bool) -> (GcSettings, Vec<Problem>) {
        let raw: RawGc = toml::from_str(text).unwrap();
        let mut p = Vec::new();
        let s = validate(raw, managed, &mut p);
        (s, p)
    }

    #[test]
    fn durations_take_seconds_or_units() {
        let (s, p) = check(
            "timeout = 30
drain_timeout = \"5m\"\npush_window = \"250ms\"\nhold_timeout = \"1d\"\n",
            true,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.drain_timeout, Duration::from_secs(300));
        assert_eq!(s.push_window, Duration::from_millis(250));
        assert_eq!(s.hold_timeout, Duration::from_secs(86400));
    }

    #[test]
    fn defaults_hold_writes() {
        let (s, p) = check("", true);
        assert!(p.is_empty());
        assert_eq!(s.closed_writes, ClosedWrites::Hold);
        assert_eq!(s.drain_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_their_keys() {
        let (_, p) = check(
            "schedule = \"every day\"\nclosed_writes = \"queue\"\nhold_timeout = \"1 fortnight\"\nuntagged = true\n",
            false,
        );
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "gc.hold_timeout",
                "gc.closed_writes",
                "gc.schedule",
                "gc.untagged"
            ]
        );
    }

    #[test]
    fn windows_may_wrap_midnight() {
        let w = GcWindow::parse("23:00-01:30").unwrap();
        assert_eq!(w.remaining(23 * 60, 0), Some(Duration::from_secs(150 * 60)));
        assert_eq!(w.remaining(60, 30), Some(Duration::from_secs(30 * 60 - 30)));
        assert_eq!(w.remaining(2 * 60, 0), None);
        let w = GcWindow::parse("01:00-05:00").unwrap();
        assert_eq!(w.remaining(0, 0), None);
        assert_eq!(w.remaining(4 * 60 + 59, 0), Some(Duration::from_secs(60)));
        assert!(GcWindow::parse("1-5").is_err());
        assert!(GcWindow::parse("25:00-01:00").is_err());
        let (_, p) = check("window = \"01:00-05:00\"\n", true);
        assert_eq!(p[0].key, "gc.window");
    }

    #[test]
    fn five_field_cron_is_accepted() {
        let (s, p) = check("schedule = \"0 3 * * *\"\n", true);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.schedule.unwrap().expression, "0 3 * * *");
    }

    #[test]
    fn schedule_without_a_command_for_an_external_registry_is_an_error() {
        let (_, p) = check("schedule = \"0 3 * * *\"\n", false);
        assert_eq!(p[0].key, "gc.schedule");
        let (_, p) = check(
            "schedule = \"0 3 * * *\"\ncommand = [\"registry\", \"garbage-collect\", \"/c.yml\"]\n",
            false,
        );
        assert!(p.is_empty(), "{p:?}");
    }
}
