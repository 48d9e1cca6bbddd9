//! Protected tags (`[[protect]]`): which tags nobody may delete, and which
//! (`immutable`) nobody may move to another manifest.
//!
//! Owns the question "is `repo:tag` protected, and by which rule?" and the
//! refusal a client sees. Pure: the callers ask it where a tag could change
//! (the manifest PUT of `app::endpoints`, the single, batch and digest deletes
//! of `tag_delete`, and the retention plan) and hold the tag's lock meanwhile.

use http::StatusCode;

use crate::config::retention::ProtectRule;
use crate::error::{ErrorCode, RegistryError};

/// The `[[protect]]` rules in force.
#[derive(Debug, Clone, Default)]
pub struct Protections {
    rules: Vec<ProtectRule>,
}

impl Protections {
    pub fn new(rules: Vec<ProtectRule>) -> Self {
        Protections { rules }
    }

    /// Whether any rule may protect a tag of `repo`.
    pub fn any_for(&self, repo: &str) -> bool {
        self.rules.iter().any(|r| r.repository.matches(repo, None))
    }

    /// The first rule protecting `repo:tag` from deletion.
    pub fn protecting(&self, repo: &str, tag: &str) -> Option<&ProtectRule> {
        self.rules
            .iter()
            .find(|r| r.repository.matches(repo, None) && r.tags.is_match(tag))
    }

    /// The first rule making `repo:tag` immutable.
    pub fn immutable(&self, repo: &str, tag: &str) -> Option<&ProtectRule> {
        self.rules
            .iter()
            .find(|r| r.immutable && r.repository.matches(repo, None) && r.tags.is_match(tag))
    }
}

/// What a client sees when a PUT would move an immutable tag: 409 `DENIED`.
pub fn move_refused(
    repo: &str,
    tag: &str,
    current: &str,
    pushed: &str,
    rule: &ProtectRule,
) -> RegistryError {
    RegistryError::new(
        StatusCode::CONFLICT,
        ErrorCode::Denied,
        format!(
            "tag {repo}:{tag} is immutable ({}): it points at {current} and cannot be moved to {pushed}; push under a new tag (the same manifest again is accepted)",
            rule.name()
        ),
    )
    .with_detail(serde_json::json!({
        "tag": tag, "digest": current, "rule": rule.name()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn rules(text: &str) -> Protections {
        let s = Settings::from_toml(
            &format!(
                "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n{text}"
            ),
            "t",
            std::iter::empty(),
        )
        .unwrap();
        Protections::new(s.protect)
    }

    #[test]
    fn the_first_matching_rule_protects() {
        let p = rules("[[protect]]\nrepository = \"ci/*\"\ntags = \"^v\"\n[[protect]]\nrepository = \"*\"\ntags = \"^stable$\"\nimmutable = false\n");
        assert_eq!(p.protecting("ci/app", "v1.0").unwrap().index, 0);
        assert!(p.immutable("ci/app", "v1.0").is_some());
        assert!(p.protecting("ci/app", "dev-v1").is_none(), "anchored by ^");
        assert!(p.protecting("other", "v1").is_none());
        assert_eq!(p.protecting("other", "stable").unwrap().index, 1);
        assert!(
            p.immutable("other", "stable").is_none(),
            "immutable = false"
        );
        assert!(p.protecting("other", "stable2").is_none());
        assert!(p.any_for("ci/app") && p.any_for("x"));
        assert!(!rules("").any_for("x"));
    }
}
