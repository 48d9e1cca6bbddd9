//! Where the command-line tools find credentials for a registry: explicit
//! flags, then `REGATE_USERNAME`/`REGATE_PASSWORD`, then the auth files
//! docker and podman write (`~/.docker/config.json`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `/run/containers/$UID/auth.json`
//! (podman's when `XDG_RUNTIME_DIR` is unset, as for root on Debian),
//! `~/.config/containers/auth.json`, or `$REGISTRY_AUTH_FILE`). Credential
//! helpers (`credsStore`) are not read. [`searched`] says where it looked,
//! for the message of a 401.

use std::path::PathBuf;

use base64::Engine as _;

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they came from (`--user`, an environment variable, a file).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// The auth files read, in order (podman's, skopeo's and docker's).
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => files.push(PathBuf::from(d).join("containers/auth.json")),
        None => files.push(PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            nix::unistd::getuid()
        ))),
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
        source: String::new(),
    })
}

/// Where [`lookup`] looks, for an operator: the flags, the variables and
/// each auth file.
pub fn searched() -> String {
    let files: Vec<String> = auth_files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    format!(
        "--user with --password-stdin, REGATE_USERNAME and REGATE_PASSWORD, then the auth files {}",
        files.join(", ")
    )
}

/// Finds credentials for `host` (`name:port`).
pub fn lookup(
    host: &str,
    username: Option<String>,
    password: Option<String>,
) -> Option<Credentials> {
    if let (Some(username), Some(password)) = (username.clone(), password) {
        return Some(Credentials {
            username,
            password,
            source: "--user".into(),
        });
    }
    if let (Ok(u), Ok(p)) = (
        std::env::var("REGATE_USERNAME"),
        std::env::var("REGATE_PASSWORD"),
    ) {
        return Some(Credentials {
            username: u,
            password: p,
            source: "REGATE_USERNAME and REGATE_PASSWORD".into(),
        });
    }
    auth_files()
        .into_iter()
        .filter_map(|f| Some((std::fs::read_to_string(&f).ok()?, f)))
        .find_map(|(text, f)| {
            from_auth_file(&text, host).map(|c| Credentials {
                source: f.display().to_string(),
                ..c
            })
        })
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

    #[test]
    fn podman_runtime_file_is_searched_without_xdg_runtime_dir() {
        // Decided by the environment; both cases say where they looked.
        let uid = nix::unistd::getuid();
        let text = searched();
        match std::env::var_os("XDG_RUNTIME_DIR") {
            None => assert!(
                text.contains(&format!("/run/containers/{uid}/auth.json")),
                "{text}"
            ),
            Some(d) => assert!(
                text.contains(&format!("{}/containers/auth.json", d.to_string_lossy())),
                "{text}"
            ),
        }
        assert!(text.contains(".docker/config.json") || std::env::var_os("HOME").is_none());
    }
}
