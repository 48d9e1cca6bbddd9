//! The shape of the file, checked before any value: every unknown key and
//! every value of the wrong type, each with its full path (`server.dev_cert`,
//! `acl[1].acount`), its line when it can be found, and for an unknown key the
//! nearest known one ("did you mean").
//!
//! serde stops at the first problem, so this deserializes the parsed document
//! into the raw structs again and again, removing each key at fault, until it
//! passes. Owns nothing but that loop and the wording; the keys themselves are
//! in `raw` (and the section modules).

use serde_path_to_error::Segment;
use toml::Value;

use super::problem::Problem;
use super::raw::RawConfig;

/// More than this many problems in one file: the rest are not worth listing.
const MAX_PROBLEMS: usize = 50;

/// One step of a key's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Every key of `doc` the raw structs do not know, and every value they
/// cannot read; empty when the document has the right shape. `text` is the
/// file, for line numbers (empty: none).
pub fn problems(doc: &toml::Table, text: &str) -> Vec<Problem> {
    let mut doc = Value::Table(doc.clone());
    let mut problems: Vec<(Option<usize>, Problem)> = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let Some(fault) = first_fault(&doc) else {
            break;
        };
        let key = dotted(&fault.path);
        let line = line_of(text, &fault.path);
        let located = match line {
            Some(line) => format!("{} (line {line})", fault.message),
            None => fault.message.clone(),
        };
        problems.push((
            line,
            Problem::new(if key.is_empty() { "(file)".into() } else { key }, located),
        ));
        // Remove what is at fault (or fill in what is missing) and look
        // again; when neither works, nothing more can be learnt.
        let fixed = if fault.missing {
            fill(&mut doc, &fault.path)
        } else {
            !fault.path.is_empty() && remove(&mut doc, &fault.path)
        };
        if !fixed {
            break;
        }
    }
    // In the order of the file (serde reads keys sorted); unplaced ones last.
    problems.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
    problems.into_iter().map(|(_, p)| p).collect()
}

/// The first thing serde cannot read, at the path of the key itself.
struct Fault {
    path: Vec<Step>,
    message: String,
    /// The key is missing (rather than unknown or of the wrong type).
    missing: bool,
}

fn first_fault(doc: &Value) -> Option<Fault> {
    let err = serde_path_to_error::deserialize::<_, RawConfig>(doc.clone()).err()?;
    let mut path: Vec<Step> = err
        .path()
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    let message = err.into_inner().message().to_owned();
    if let Some((field, expected)) = unknown_field(&message) {
        // The path ends at the table holding the key, or at the key.
        if path.last() != Some(&Step::Key(field.clone())) {
            path.push(Step::Key(field.clone()));
        }
        let mut m = "unknown key".to_owned();
        match did_you_mean(&field, &expected) {
            Some(near) => {
                let mut fixed = path.clone();
                fixed.pop();
                fixed.push(Step::Key(near.to_owned()));
                m.push_str(&format!("; did you mean `{}`?", dotted(&fixed)));
            }
            None if expected.is_empty() => m.push_str("; this table takes no keys"),
            None => m.push_str(&format!("; known keys here: {}", expected.join(", "))),
        }
        return Some(Fault {
            path,
            message: m,
            missing: false,
        });
    }
    if let Some((field, _)) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split_once('`'))
    {
        path.push(Step::Key(field.to_owned()));
        return Some(Fault {
            path,
            message: "missing; this table needs it".into(),
            missing: true,
        });
    }
    Some(Fault {
        path,
        message,
        missing: false,
    })
}

/// `unknown field `x`, expected one of `a`, `b`` (serde's wording) into the
/// field and the expected names.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// The known name closest to `field`, if it is close enough to be a typo.
fn did_you_mean<'a>(field: &str, expected: &'a [String]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (strsim::damerau_levenshtein(field, e), e))
        .filter(|(d, e)| {
            *d <= (field.len().max(e.len()) / 3).max(1)
                || e.starts_with(field)
                || field.starts_with(e.as_str())
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

/// Puts a stand-in at the missing `path`, the first of a few types that the
/// raw structs accept there; false if none is.
fn fill(doc: &mut Value, path: &[Step]) -> bool {
    let stand_ins = [
        Value::String(String::new()),
        Value::Array(Vec::new()),
        Value::Table(toml::Table::new()),
        Value::Integer(0),
        Value::Boolean(false),
    ];
    for v in stand_ins {
        let mut trial = doc.clone();
        if !insert(&mut trial, path, v) {
            return false;
        }
        // Accepted when the first fault is now elsewhere.
        let still_here = first_fault(&trial).is_some_and(|f| f.path == path);
        if !still_here {
            *doc = trial;
            return true;
        }
    }
    false
}

/// The value at `path`, if every step of it is there.
fn value_at<'a>(doc: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |cur, step| match (step, cur) {
        (Step::Key(k), Value::Table(t)) => t.get_mut(k),
        (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

fn insert(doc: &mut Value, path: &[Step], v: Value) -> bool {
    let Some((Step::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let Some(cur) = value_at(doc, parents) else {
        return false;
    };
    match cur {
        Value::Table(t) => {
            t.insert(last.clone(), v);
            true
        }
        _ => false,
    }
}

/// Removes the value at `path`; false if there is none.
fn remove(doc: &mut Value, path: &[Step]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let Some(v) = value_at(doc, parents) else {
        return false;
    };
    match (last, v) {
        (Step::Key(k), Value::Table(t)) => t.remove(k).is_some(),
        (Step::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// The line (1-based) where the key at `path` is written, for the usual
/// layouts: `[table]` and `[[array]]` headers, `key = value` and dotted keys.
/// Best effort: inline tables are not searched.
fn line_of(text: &str, path: &[Step]) -> Option<usize> {
    let mut header: Vec<Step> = Vec::new();
    let mut array_counts: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        if let Some(h) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let keys = split_key(h);
            let name = keys.join(".");
            let i = array_counts.entry(name).or_insert(0);
            header = keys.into_iter().map(Step::Key).collect();
            header.push(Step::Index(*i));
            *i += 1;
        } else if let Some(h) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            header = split_key(h).into_iter().map(Step::Key).collect();
        } else if let Some((k, _)) = l.split_once('=') {
            let mut full = header.clone();
            full.extend(split_key(k).into_iter().map(Step::Key));
            if full == path {
                return Some(n + 1);
            }
        }
        if header == path {
            return Some(n + 1);
        }
    }
    None
}

/// `a."b.c" . d` into `["a", "b.c", "d"]`.
fn split_key(k: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in k.trim().chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => parts.push(std::mem::take(&mut cur).trim().to_owned()),
            _ => cur.push(c),
        }
    }
    parts.push(cur.trim().to_owned());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<(String, String)> {
        problems(&text.parse().unwrap(), text)
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn every_unknown_key_with_its_path_line_and_nearest_name() {
        let got = check(
            "[server]\ndev_cert = true\nlisten = \"127.0.0.1:5443\"\n[upstream.managed]\nbinray = \"x\"\n[[acl]]\naccount = \"a\"\nrepository = \"*\"\nactions = []\n[[acl]]\nacount = \"b\"\nrepository = \"*\"\nactions = []\n[sever]\nx = 1\n",
        );
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.dev_cert",
                "upstream.managed.binray",
                "acl[1].acount",
                "sever",
                "acl[1].account"
            ],
            "{got:#?}"
        );
        for (i, (near, line)) in [
            ("server.dev_certs", 2),
            ("upstream.managed.binary", 5),
            ("acl[1].account", 11),
            ("server", 14),
        ]
        .into_iter()
        .enumerate()
        {
            let m = &got[i].1;
            assert!(m.contains(&format!("did you mean `{near}`?")), "{m}");
            assert!(m.contains(&format!("(line {line})")), "{m}");
        }
    }

    #[test]
    fn wrong_types_are_named_and_far_names_list_the_known_keys() {
        let got = check("[server]\nlisten = 5443\n[log]\nzzzzzzzz = 1\n");
        assert_eq!(got[0].0, "server.listen", "{got:?}");
        assert!(got[0].1.contains("line 2"), "{got:?}");
        assert_eq!(got[1].0, "log.zzzzzzzz", "{got:?}");
        assert!(
            got[1].1.contains("known keys here: level, format"),
            "{got:?}"
        );
    }

    #[test]
    fn a_missing_key_is_named() {
        let got = check("[[acl]]\naccount = \"a\"\nactions = []\n");
        assert_eq!(got[0].0, "acl[0].repository", "{got:?}");
    }

    #[test]
    fn a_good_file_has_no_problems() {
        assert!(check("[server]\ndev_certs = true\n[upstream]\nurl = \"http://x:1\"\n").is_empty());
    }
}
