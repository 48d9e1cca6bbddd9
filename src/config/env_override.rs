//! Environment overrides: `REGATE_<SECTION>__<KEY>` (and deeper,
//! `REGATE_UPSTREAM__MANAGED__BINARY`) sets the key `section.key` of the
//! parsed TOML document before it is deserialized.
//!
//! A value that reads as a TOML boolean, number or array (`true`, `30`,
//! `["a","b"]`) is taken as such; anything else is a string. To force a string
//! that looks like a number, quote it: `REGATE_X__Y='"1234"'`.

use toml::Value;

pub const PREFIX: &str = "REGATE_";

/// One override that was applied, for error messages.
#[derive(Debug, Clone)]
pub struct Applied {
    pub var: String,
    pub key: String,
}

/// Applies every `REGATE_*__*` pair in `vars` to `doc`.
pub fn apply(
    doc: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Vec<Applied>, String> {
    let mut applied = Vec::new();
    let mut vars: Vec<_> = vars
        .filter(|(k, _)| k.starts_with(PREFIX) && k.contains("__"))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "environment variable {var}: empty key component; use REGATE_SECTION__KEY"
            ));
        }
        let mut table = &mut *doc;
        for part in &path[..path.len() - 1] {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            table = match entry {
                Value::Table(t) => t,
                _ => {
                    return Err(format!(
                        "environment variable {var}: `{part}` is not a section in the config file"
                    ))
                }
            };
        }
        let leaf = path[path.len() - 1].clone();
        table.insert(leaf, parse_value(&raw));
        applied.push(Applied {
            var,
            key: path.join("."),
        });
    }
    Ok(applied)
}

fn parse_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    let typed = trimmed == "true"
        || trimmed == "false"
        || trimmed.starts_with('[')
        || trimmed.starts_with('"')
        || trimmed.parse::<i64>().is_ok()
        || trimmed.parse::<f64>().is_ok();
    if typed {
        if let Ok(mut t) = format!("v = {trimmed}").parse::<toml::Table>() {
            if let Some(v) = t.remove("v") {
                return v;
            }
        }
    }
    Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn sets_nested_keys_with_types() {
        let mut doc: toml::Table = "[server]\nlisten = \"a\"\n".parse().unwrap();
        let applied = apply(
            &mut doc,
            vars(&[
                ("REGATE_SERVER__LISTEN", "127.0.0.1:1"),
                ("REGATE_UPSTREAM__MANAGED__BINARY", "registry"),
                ("REGATE_SERVER__IDLE_TIMEOUT_SECS", "30"),
                ("REGATE_SERVER__DEV_CERTS", "true"),
                ("REGATE_LOG", "ignored: no section"),
                ("OTHER__X", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.len(), 4);
        assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(doc["server"]["idle_timeout_secs"].as_integer(), Some(30));
        assert_eq!(doc["server"]["dev_certs"].as_bool(), Some(true));
        assert_eq!(
            doc["upstream"]["managed"]["binary"].as_str(),
            Some("registry")
        );
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let mut doc = toml::Table::new();
        apply(&mut doc, vars(&[("REGATE_A__B", "\"1234\"")])).unwrap();
        assert_eq!(doc["a"]["b"].as_str(), Some("1234"));
    }
}
