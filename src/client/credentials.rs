//! Where the command-line tools find credentials for a registry: explicit
//! flags, then `REGATE_USERNAME`/`REGATE_PASSWORD`, then the auth files
//! docker and podman write (`~/.docker/config.json`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
//! or `$REGISTRY_AUTH_FILE`). Credential helpers (`credsStore`) are not read.

use std::path::PathBuf;

use base64::Engine as _;

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        files.push(home.join(".config/containers/auth.json"));
        files.push(home.join(".docker/config.json"));
    }
    files
}

/// Reads `auths[host].auth` (base64 `user:password`) from a docker/podman file.
pub fn from_auth_file(text: &str, host: &str) -> Option<Credentials> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k == host || k.split('/').next() == Some(host)
    })?;
    let encoded = entry.1.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// Finds credentials for `host` (`name:port`).
pub fn lookup(
    host: &str,
    username: Option<String>,
    password: Option<String>,
) -> Option<Credentials> {
    if let (Some(username), Some(password)) = (username.clone(), password) {
        return Some(Credentials { username, password });
    }
    if let (Ok(u), Ok(p)) = (
        std::env::var("REGATE_USERNAME"),
        std::env::var("REGATE_PASSWORD"),
    ) {
        return Some(Credentials {
            username: u,
            password: p,
        });
    }
    auth_files()
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|text| from_auth_file(&text, host))
        .filter(|c| username.as_ref().is_none_or(|u| *u == c.username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_and_podman_auth_files() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let text = format!(r#"{{"auths":{{"https://reg.example:5443":{{"auth":"{auth}"}}}}}}"#);
        let c = from_auth_file(&text, "reg.example:5443").unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "s3cr:et");
        assert!(from_auth_file(&text, "other:5443").is_none());
        assert!(!format!("{c:?}").contains("s3cr"));
    }
}
