//! A registry client for regate's command-line tools (`regate tags ...`,
//! `regate fsck`): HTTPS (or plain HTTP when asked) to a regate or any
//! registry, answering Basic and Bearer
//! challenges with the credentials found by [`credentials`], trusting the
//! system roots plus `--cacert` and docker's `certs.d/<host>/ca.crt`.
//! Owns [`http_client`], the one HTTP client builder of the command line
//! (the admin client's too); the server's is `proxy::UpstreamClient`.

pub mod credentials;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

pub use credentials::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not REGISTRY/REPOSITORY[:TAG] (e.g. localhost:5443/app:v1)")]
    BadReference(String),
    #[error("{path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate ({source})")]
    CaPem {
        path: String,
        source: reqwest::Error,
    },
    #[error("cannot reach {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("the token service at {realm} answered {status}")]
    Token { realm: String, status: StatusCode },
    #[error("{0}")]
    Registry(String),
}

/// `registry/repository[:tag]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ClientError> {
        let bad = || ClientError::BadReference(s.to_owned());
        let s = s.trim_start_matches("docker://");
        let (registry, rest) = s.split_once('/').ok_or_else(bad)?;
        if registry.is_empty() || rest.is_empty() {
            return Err(bad());
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
            _ => (rest, None),
        };
        crate::route::RepoName::parse(repository).map_err(|_| bad())?;
        if let Some(t) = &tag {
            crate::route::Tag::parse(t).map_err(|_| bad())?;
        }
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
        })
    }
}

#[derive(Debug, Clone)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `WWW-Authenticate`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    // key="value" pairs; values may contain commas inside quotes.
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = tail.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// How to reach the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// Splits `http://host:port` or `https://host:port` (default https) into
    /// the scheme and `host:port`.
    pub fn split(target: &str) -> (Scheme, &str) {
        let target = target.trim_end_matches('/');
        if let Some(rest) = target.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            (
                Scheme::Https,
                target.strip_prefix("https://").unwrap_or(target),
            )
        }
    }
}

/// The command line's HTTP client: no proxy from the environment, a 10 s
/// connect timeout, and `roots` trusted besides the system's.
pub fn http_client(roots: Vec<reqwest::Certificate>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .no_proxy();
    for cert in roots {
        builder = builder.add_root_certificate(cert);
    }
    builder.build()
}

pub struct RegistryClient {
    http: reqwest::Client,
    pub base: String,
    creds: Option<Credentials>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, String>>,
}

impl RegistryClient {
    /// A client for `https://<registry>`.
    pub fn new(
        registry: &str,
        cacert: Option<&Path>,
        creds: Option<Credentials>,
    ) -> Result<Self, ClientError> {
        Self::with_scheme(Scheme::Https, registry, cacert, creds)
    }

    /// A client for `<scheme>://<registry>`.
    pub fn with_scheme(
        scheme: Scheme,
        registry: &str,
        cacert: Option<&Path>,
        creds: Option<Credentials>,
    ) -> Result<Self, ClientError> {
        let mut roots = Vec::new();
        let mut cas: Vec<PathBuf> = cacert.map(Path::to_path_buf).into_iter().collect();
        for dir in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
            let p = Path::new(dir).join(registry).join("ca.crt");
            if p.is_file() {
                cas.push(p);
            }
        }
        for ca in cas {
            let pem = std::fs::read(&ca).map_err(|source| ClientError::CaFile {
                path: ca.display().to_string(),
                source,
            })?;
            let cert =
                reqwest::Certificate::from_pem(&pem).map_err(|source| ClientError::CaPem {
                    path: ca.display().to_string(),
                    source,
                })?;
            roots.push(cert);
        }
        let http = http_client(roots).map_err(|source| ClientError::Transport {
            url: registry.to_owned(),
            source,
        })?;
        Ok(RegistryClient {
            http,
            base: format!("{}://{registry}", scheme.as_str()),
            creds,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Whether credentials were found for this registry.
    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    /// What to do about a 401: which credentials were refused, or where
    /// none were found and how to pass them.
    pub fn credentials_hint(&self) -> String {
        let host = self.base.split("://").nth(1).unwrap_or(&self.base);
        match &self.creds {
            Some(c) => format!(
                "the credentials of {:?} (from {}) were refused; check them, or pass others with --user NAME --password-stdin",
                c.username, c.source
            ),
            None => format!(
                "no credentials found for {host}; looked at {}. Pass --user NAME --password-stdin, set REGATE_USERNAME and REGATE_PASSWORD, or log in with `podman login {host}` (or docker login)",
                credentials::searched()
            ),
        }
    }

    /// [`error_text`], with [`credentials_hint`](Self::credentials_hint)
    /// on a 401.
    pub async fn error_text(&self, resp: Response) -> String {
        let unauthorized = resp.status() == StatusCode::UNAUTHORIZED;
        let text = error_text(resp).await;
        if unauthorized {
            format!("{text}: {}", self.credentials_hint())
        } else {
            text
        }
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|c| {
            let raw = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, ClientError> {
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
        {
            return Ok(t.clone());
        }
        let mut req = self.http.get(realm).query(&[("scope", scope)]);
        if let Some(s) = service {
            req = req.query(&[("service", s)]);
        }
        if let Some(b) = self.basic() {
            req = req.header("authorization", b);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: realm.to_owned(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(ClientError::Token {
                realm: realm.to_owned(),
                status: resp.status(),
            });
        }
        let v: serde_json::Value = resp.json().await.map_err(|source| ClientError::Transport {
            url: realm.to_owned(),
            source,
        })?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .unwrap_or_default()
            .to_owned();
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_owned(), token.clone());
        Ok(token)
    }

    async fn authorize(
        &self,
        req: RequestBuilder,
        scope: &str,
    ) -> Result<RequestBuilder, ClientError> {
        let challenge = self
            .challenge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(match challenge {
            None => req,
            Some(Challenge::Basic) => match self.basic() {
                Some(b) => req.header("authorization", b),
                None => req,
            },
            Some(Challenge::Bearer { realm, service }) => {
                let t = self.token(&realm, service.as_deref(), scope).await?;
                req.header("authorization", format!("Bearer {t}"))
            }
        })
    }

    /// Sends `method path` (path starts with `/v2/`), answering one auth
    /// challenge. `scope` is the token scope the request needs.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
    ) -> Result<Response, ClientError> {
        self.send_json(method, path, scope, accept, None).await
    }

    /// Like [`send`](Self::send), with a JSON body.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let req = self.authorize(req, scope).await?;
            let resp = req.send().await.map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if let Some(c) = challenge {
                    let known = self
                        .challenge
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_some();
                    if !known && (self.creds.is_some() || matches!(c, Challenge::Bearer { .. })) {
                        *self.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                        continue;
                    }
                }
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second pass")
    }
}

/// The first OCI error message of a response body, for reports.
pub async fn error_text(resp: Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = &v["errors"][0];
            Some(format!(
                "{}: {}",
                e["code"].as_str()?,
                e["message"].as_str().unwrap_or("")
            ))
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("{} {msg}", status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = ImageRef::parse("localhost:5443/team/app:v1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5443", "team/app", Some("v1.2"))
        );
        let r = ImageRef::parse("reg.example/app").unwrap();
        assert_eq!(r.tag, None);
        assert!(ImageRef::parse("app:v1").is_err());
        assert!(ImageRef::parse("reg/App:v1").is_err());
    }

    #[test]
    fn challenges() {
        assert!(matches!(
            parse_challenge("Basic realm=\"regate\""),
            Some(Challenge::Basic)
        ));
        match parse_challenge("Bearer realm=\"https://r/auth/token\",service=\"reg\",scope=\"repository:a/b:pull,push\"") {
            Some(Challenge::Bearer { realm, service }) => {
                assert_eq!(realm, "https://r/auth/token");
                assert_eq!(service.as_deref(), Some("reg"));
            }
            other => panic!("{other:?}"),
        }
    }
}
