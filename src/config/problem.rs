//! One thing wrong with the configuration: the key at fault and what to do.
//! Every section's validation reports its findings as [`Problem`]s; this
//! file imports nothing of the config module, so each section may use it.

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key at fault, e.g. `server.listen`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A parse error of the TOML text (syntax, unknown key, wrong type).
    pub fn from_toml(e: &toml::de::Error) -> Self {
        let msg = e
            .to_string()
            .replace('\n', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Problem::new("(syntax)", msg)
    }
}
