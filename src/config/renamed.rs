//! Keys renamed since an earlier release, still read under their old name:
//! the `*_secs` duration keys lost their suffix when every duration key took
//! the same syntax (`config::duration`). An old name in the file or in a
//! `REGATE_...` override is moved to the new one before the raw structs are
//! read, with a deprecation warning naming both; setting both is a problem.
//!
//! Owns the table of renames ([`RENAMED`]) and that rewrite.

use super::problem::Problem;

/// `(section path, old key, new key)`.
pub const RENAMED: &[(&str, &str, &str)] = &[
    ("server", "handshake_timeout_secs", "handshake_timeout"),
    ("server", "header_read_timeout_secs", "header_read_timeout"),
    ("server", "idle_timeout_secs", "idle_timeout"),
    ("server", "shutdown_timeout_secs", "shutdown_timeout"),
    ("upstream", "connect_timeout_secs", "connect_timeout"),
    ("upstream", "response_timeout_secs", "response_timeout"),
    ("upstream", "idle_timeout_secs", "idle_timeout"),
    ("auth", "cache_ttl_secs", "cache_ttl"),
    ("auth", "failed_login_window_secs", "failed_login_window"),
];

/// Moves every old key of `doc` to its new name; returns the deprecation
/// warnings and the problems (both names set, unless `old_wins`: an
/// environment override under the old name replaces the file's value).
pub fn apply(doc: &mut toml::Table, old_wins: bool) -> (Vec<Problem>, Vec<Problem>) {
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for (section, old, new) in RENAMED {
        let Some(toml::Value::Table(t)) = doc.get_mut(*section) else {
            continue;
        };
        let Some(v) = t.remove(*old) else {
            continue;
        };
        let (old_key, new_key) = (format!("{section}.{old}"), format!("{section}.{new}"));
        if t.contains_key(*new) && !old_wins {
            problems.push(Problem::new(
                old_key,
                format!("is the old name of {new_key}, which is set too; remove {old}"),
            ));
            continue;
        }
        t.insert((*new).to_owned(), v);
        warnings.push(Problem::new(
            old_key,
            format!("is deprecated: rename it to {new_key} (same value; durations also take \"90s\", \"15m\", \"12h\", \"30d\")"),
        ));
    }
    (warnings, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_names_move_with_a_warning_and_both_is_a_problem() {
        let mut doc: toml::Table =
            "[server]\nidle_timeout_secs = 5\n[upstream]\nidle_timeout_secs = 6\nidle_timeout = \"7s\"\n"
                .parse()
                .unwrap();
        let (warnings, problems) = apply(&mut doc, false);
        assert_eq!(doc["server"]["idle_timeout"].as_integer(), Some(5));
        assert!(doc["server"].get("idle_timeout_secs").is_none());
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].key, "server.idle_timeout_secs");
        assert!(warnings[0].message.contains("server.idle_timeout"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "upstream.idle_timeout_secs");
        let mut doc: toml::Table = "[upstream]\nidle_timeout_secs = 6\nidle_timeout = \"7s\"\n"
            .parse()
            .unwrap();
        let (warnings, problems) = apply(&mut doc, true);
        assert!(problems.is_empty());
        assert_eq!(warnings.len(), 1);
        assert_eq!(doc["upstream"]["idle_timeout"].as_integer(), Some(6));
    }
}
