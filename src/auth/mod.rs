//! Stage 1 of the pipeline: who is calling, and may they do this?
//!
//! Owns [`Auth`] (built once from the settings: mode, htpasswd, token keys,
//! rules), reading regate's upstream credentials ([`upstream_authorization`]),
//! [`AuthError`] and its one conversion into a [`RegistryError`] with the
//! right challenge. It reads the request's
//! headers, method, route and query; it calls [`crate::rules`] for decisions,
//! its own submodules for passwords and tokens, and [`crate::audit`]. It
//! never sees a body except the token endpoint's small form.

pub mod admin_access;
pub mod bcrypt_flight;
pub mod catalog;
pub mod challenge;
pub mod cli;
pub mod credentials;
pub mod htpasswd;
pub mod login_cache;
pub mod passwords;
pub mod rate_limit;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::audit::{Audit, Event};
use crate::config::{AuthMode, Settings};
use crate::error::{ErrorCode, RegistryError};
use crate::route::{Route, RouteError};
use crate::rules::{mount_source, required, Action, ActionSet, Mount, Need, RuleSet};
use challenge::Challenge;
use credentials::{MalformedAuth, Presented};
use passwords::{LoginError, Passwords};
use token::{TokenError, Tokens};

/// Why auth could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.htpasswd: {0}")]
    Htpasswd(#[from] htpasswd::HtpasswdError),
    #[error("auth.token: {0}")]
    Key(#[from] token::KeyError),
    #[error("upstream.password_file {path}: cannot read ({source})")]
    UpstreamPassword {
        path: String,
        source: std::io::Error,
    },
    #[error("audit.file {path}: cannot open ({source})")]
    Audit {
        path: String,
        source: std::io::Error,
    },
}

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{source}")]
    Malformed {
        source: MalformedAuth,
        challenge: Challenge,
    },
    #[error("authentication required")]
    Unauthenticated { challenge: Challenge },
    #[error("{source}")]
    BadLogin {
        source: LoginError,
        challenge: Challenge,
    },
    #[error("{source}")]
    InvalidToken {
        source: TokenError,
        challenge: Challenge,
    },
    #[error("the token does not grant this")]
    InsufficientScope { challenge: Challenge },
    #[error("{account} may not {}", denied_text(*.action, .repository))]
    Denied {
        account: String,
        /// The action no rule grants (of those the request needs, the most
        /// specific: push over pull).
        action: crate::rules::Action,
        repository: String,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
}

impl From<AuthError> for RegistryError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        let (status, code, challenge, retry) = match e {
            AuthError::Malformed { source, challenge } => {
                if source.is_bad_request() {
                    (StatusCode::BAD_REQUEST, ErrorCode::Unauthorized, None, None)
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        ErrorCode::Unauthorized,
                        Some(challenge),
                        None,
                    )
                }
            }
            AuthError::Unauthenticated { challenge } => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                Some(challenge),
                None,
            ),
            AuthError::BadLogin { source, challenge } => match source {
                LoginError::Wrong => (
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    Some(challenge),
                    None,
                ),
                LoginError::TooMany(wait) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    None,
                    Some(wait),
                ),
                LoginError::Internal(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Unknown,
                    None,
                    None,
                ),
            },
            AuthError::InvalidToken { challenge, .. }
            | AuthError::InsufficientScope { challenge } => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                Some(challenge),
                None,
            ),
            AuthError::Denied { .. } => (StatusCode::FORBIDDEN, ErrorCode::Denied, None, None),
            AuthError::Route(r) => return RegistryError::from(r),
        };
        let mut err = RegistryError::new(status, code, message);
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
            err = err.with_header(header::WWW_AUTHENTICATE, c);
        }
        if let Some(wait) = retry {
            err = err.with_header(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        err
    }
}

/// `push to team/app`, for the refusal message and the audit reason.
pub fn denied_text(action: crate::rules::Action, repository: &str) -> String {
    use crate::rules::Action;
    let verb = match action {
        Action::Pull => "pull from",
        Action::Push => "push to",
        Action::Delete => "delete from",
        Action::Admin => "administer",
    };
    if repository == "*" {
        format!("{verb} every repository (\"*\")")
    } else {
        format!("{verb} {repository}")
    }
}

/// Who passed stage 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `None`: anonymous.
    pub account: Option<String>,
    /// The request asks to mount a blob from a repository the caller may not
    /// pull (or names no usable one): it goes on as a plain upload, without
    /// its `mount` and `from` ([`crate::registry_params::without_mount`]).
    pub drop_mount: bool,
}

impl Caller {
    /// A caller whose request mounts nothing regate must drop.
    pub fn new(account: Option<String>) -> Caller {
        Caller {
            account,
            drop_mount: false,
        }
    }
}

/// What a request carries into stage 1.
pub struct Attempt<'a> {
    pub method: &'a Method,
    pub route: &'a Route,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub peer: SocketAddr,
    /// The origin clients use (for the token realm).
    pub public_origin: String,
}

impl Attempt<'_> {
    /// The cross-repository mount the request asks for.
    fn mount(&self) -> Mount {
        mount_source(self.method, self.route, self.query)
    }
}

/// regate's own credentials for the registry (`[upstream] username` and
/// `password_file`) as a sensitive `Authorization` value, if configured.
/// The upstream client ([`crate::proxy::UpstreamClient`]) sends them.
pub fn upstream_authorization(
    a: &crate::config::AuthSettings,
) -> Result<Option<HeaderValue>, AuthSetupError> {
    match (&a.upstream_username, &a.upstream_password_file) {
        (Some(user), Some(path)) => {
            let pw = std::fs::read_to_string(path).map_err(|source| {
                AuthSetupError::UpstreamPassword {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            let mut v = HeaderValue::from_str(&format!("Basic {b64}")).map_err(|_| {
                AuthSetupError::UpstreamPassword {
                    path: path.display().to_string(),
                    source: std::io::Error::other("the password is not header-safe text"),
                }
            })?;
            v.set_sensitive(true);
            Ok(Some(v))
        }
        _ => Ok(None),
    }
}

pub struct Auth {
    mode: AuthMode,
    realm: String,
    /// Swapped whole by [`Auth::replace_rules`] (SIGHUP).
    rules: std::sync::RwLock<Arc<RuleSet>>,
    passwords: Option<Arc<Passwords>>,
    tokens: Option<Tokens>,
    /// `[upstream] username` is set: the client's `Authorization` is
    /// replaced by regate's even with `auth.mode = "none"`.
    upstream_authorization: bool,
    audit: Audit,
}

impl Auth {
    pub fn from_settings(settings: &Settings) -> Result<Auth, AuthSetupError> {
        let a = &settings.auth;
        let audit = Audit::open(settings.audit.file.as_deref()).map_err(|source| {
            AuthSetupError::Audit {
                path: settings
                    .audit
                    .file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            }
        })?;
        let passwords = match (&a.htpasswd, a.mode) {
            (Some(p), AuthMode::Basic | AuthMode::Token) => Some(Arc::new(Passwords::open(
                p,
                a.cache_ttl,
                a.max_failed_logins,
                a.failed_login_window,
            )?)),
            _ => None,
        };
        let tokens = match a.mode {
            AuthMode::Token => Some(Tokens::load(&a.token)?),
            AuthMode::None | AuthMode::Basic => None,
        };
        match a.mode {
            AuthMode::None => tracing::warn!(
                "\n\n    *** auth.mode = \"none\": ANYONE who reaches {} can pull, push and delete. ***\n    *** Use this only for local trials; set [auth] mode = \"basic\" or \"token\". ***\n",
                settings.server.listen
            ),
            AuthMode::Basic | AuthMode::Token => tracing::info!(
                mode = a.mode.as_str(),
                kid = tokens.as_ref().map(|t| t.kid()).unwrap_or("-"),
                "auth enabled"
            ),
        }
        Ok(Auth {
            mode: a.mode,
            realm: a.realm.clone(),
            rules: std::sync::RwLock::new(Arc::new(a.rules.clone())),
            passwords,
            tokens,
            upstream_authorization: a.upstream_username.is_some(),
            audit,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The rules in force (a snapshot: a reload does not change it).
    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts new `[[acl]]` rules (and groups) in force for the next request.
    pub fn replace_rules(&self, rules: RuleSet) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The headers that go upstream: the client's credentials never do
    /// (regate's own, `[upstream] username`, take their place in
    /// [`crate::proxy::UpstreamClient`]).
    pub fn prepare_upstream(&self, headers: &mut HeaderMap) {
        if self.mode != AuthMode::None || self.upstream_authorization {
            headers.remove(header::AUTHORIZATION);
        }
    }

    fn challenge(
        &self,
        a: &Attempt<'_>,
        need: Option<&Need>,
        error: Option<&'static str>,
    ) -> Challenge {
        match (&self.tokens, self.mode) {
            (Some(t), AuthMode::Token) => Challenge::Bearer {
                realm: format!("{}/auth/token", a.public_origin),
                service: t.service().to_owned(),
                // A client asks for pull on a mount's source up front, so its
                // token can do the mount.
                scope: need
                    .map(|n| n.with_mount(&a.mount()))
                    .and_then(|n| token::scope_for(&n)),
                error,
            },
            _ => Challenge::Basic {
                realm: self.realm.clone(),
            },
        }
    }

    fn audit_refusal(
        &self,
        a: &Attempt<'_>,
        event: &'static str,
        account: Option<&str>,
        reason: &str,
    ) {
        let mut e = Event::new(event, a.peer.ip());
        e.account = account;
        e.method = Some(a.method.as_str());
        e.repository = a.route.repository().map(|r| r.as_str());
        e.reason = Some(reason);
        self.audit.record(&e);
    }

    /// Stage 1: authenticates the caller and checks the rules.
    pub async fn authorize(&self, a: Attempt<'_>) -> Result<Caller, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Caller {
                account: None,
                drop_mount: a.mount() == Mount::Unusable,
            });
        }
        let need = required(a.method, a.route);
        let presented = match credentials::presented(a.headers) {
            Ok(p) => p,
            Err(source) => {
                self.audit_refusal(&a, "auth_failure", None, &source.to_string());
                // RFC 6750: a malformed token is an invalid one.
                let error = (self.mode == AuthMode::Token && source == MalformedAuth::BearerToken)
                    .then_some("invalid_token");
                return Err(AuthError::Malformed {
                    challenge: self.challenge(&a, Some(&need), error),
                    source,
                });
            }
        };
        match (self.mode, &presented) {
            // Basic credentials work in token mode too (checked against the
            // htpasswd file, same rules), so `curl -u` needs no token first;
            // clients still get the Bearer challenge.
            (AuthMode::Token, Presented::Basic { .. }) | (AuthMode::Basic | AuthMode::None, _) => {
                self.authorize_basic(&a, need, presented).await
            }
            (AuthMode::Token, _) => self.authorize_token(&a, need, presented),
        }
    }

    async fn authorize_basic(
        &self,
        a: &Attempt<'_>,
        need: Need,
        presented: Presented,
    ) -> Result<Caller, AuthError> {
        let account = match presented {
            Presented::Nothing => None,
            Presented::Bearer(_) => {
                self.audit_refusal(a, "auth_failure", None, "bearer token in basic mode");
                return Err(AuthError::Unauthenticated {
                    challenge: self.challenge(a, Some(&need), None),
                });
            }
            Presented::Basic { user, password } => {
                let Some(pw) = &self.passwords else {
                    return Err(AuthError::Unauthenticated {
                        challenge: self.challenge(a, Some(&need), None),
                    });
                };
                if let Err(source) = pw.check(&user, &password, a.peer.ip()).await {
                    let event = source.audit_event();
                    self.audit_refusal(a, event, Some(&user), &source.to_string());
                    return Err(AuthError::BadLogin {
                        source,
                        challenge: self.challenge(a, Some(&need), None),
                    });
                }
                Some(user)
            }
        };
        let rules = self.rules();
        let allowed = match &need {
            Need::Authenticated | Need::Catalog => account.is_some(),
            Need::Repositories(list) => list
                .iter()
                .all(|(name, actions)| rules.permits(account.as_deref(), name.as_str(), *actions)),
        };
        match (allowed, account) {
            (true, account) => {
                let drop_mount = match a.mount() {
                    Mount::None => false,
                    Mount::Unusable => true,
                    Mount::From(from) => !self.rules().permits(
                        account.as_deref(),
                        from.as_str(),
                        ActionSet::of(&[Action::Pull]),
                    ),
                };
                Ok(Caller {
                    account,
                    drop_mount,
                })
            }
            (false, None) => {
                // A challenge can help: the client may have credentials.
                if matches!(need, Need::Repositories(_)) {
                    self.audit_refusal(a, "denied", None, "anonymous");
                }
                Err(AuthError::Unauthenticated {
                    challenge: self.challenge(a, Some(&need), None),
                })
            }
            (false, Some(account)) => {
                self.audit_refusal(a, "denied", Some(&account), "no rule allows it");
                // The first repository and action no rule grants.
                let (repository, action) = match &need {
                    Need::Repositories(list) => list
                        .iter()
                        .find_map(|(name, actions)| {
                            let allowed = rules.allowed(Some(&account), name.as_str());
                            actions
                                .iter()
                                .filter(|x| !allowed.contains(*x))
                                .max()
                                .map(|x| (name.as_str().to_owned(), x))
                        })
                        .unwrap_or_else(|| ("*".into(), crate::rules::Action::Admin)),
                    Need::Authenticated | Need::Catalog => ("*".into(), crate::rules::Action::Pull),
                };
                Err(AuthError::Denied {
                    account,
                    action,
                    repository,
                })
            }
        }
    }

    fn authorize_token(
        &self,
        a: &Attempt<'_>,
        need: Need,
        presented: Presented,
    ) -> Result<Caller, AuthError> {
        let Some(tokens) = &self.tokens else {
            return Err(AuthError::Unauthenticated {
                challenge: self.challenge(a, Some(&need), None),
            });
        };
        let token = match presented {
            Presented::Bearer(t) => t,
            Presented::Nothing | Presented::Basic { .. } => {
                return Err(AuthError::Unauthenticated {
                    challenge: self.challenge(a, Some(&need), None),
                })
            }
        };
        let verified = match tokens.verify(&token) {
            Ok(v) => v,
            Err(source) => {
                self.audit_refusal(a, "auth_failure", None, &source.to_string());
                return Err(AuthError::InvalidToken {
                    source,
                    challenge: self.challenge(a, Some(&need), Some("invalid_token")),
                });
            }
        };
        if tokens.allows(&self.rules(), &verified, &need) {
            let drop_mount = match a.mount() {
                Mount::None => false,
                Mount::Unusable => true,
                Mount::From(from) => !tokens.allows(
                    &self.rules(),
                    &verified,
                    &Need::Repositories(vec![(from, ActionSet::of(&[Action::Pull]))]),
                ),
            };
            return Ok(Caller {
                account: verified.account,
                drop_mount,
            });
        }
        self.audit_refusal(
            a,
            "denied",
            verified.account.as_deref(),
            "token scope does not cover the request",
        );
        Err(AuthError::InsufficientScope {
            challenge: self.challenge(a, Some(&need), Some("insufficient_scope")),
        })
    }

    /// A password check outside the registry API (the token endpoint, the
    /// admin API); audits failures with `context`.
    async fn login(
        &self,
        user: &str,
        password: &str,
        peer: SocketAddr,
        context: &'static str,
    ) -> Result<(), LoginError> {
        let r = match &self.passwords {
            Some(pw) => pw.check(user, password, peer.ip()).await,
            None => Err(LoginError::Wrong),
        };
        if let Err(source) = &r {
            let mut e = Event::new(source.audit_event(), peer.ip());
            e.account = Some(user);
            e.reason = Some(context);
            self.audit.record(&e);
        }
        r
    }

    /// What binds a refresh token to `user`'s htpasswd entry; `None` when
    /// the user is not in the file.
    fn password_binding(&self, user: &str) -> Option<String> {
        self.passwords.as_ref()?.binding(user)
    }

    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }
}

/// Time a client must wait, as the `Retry-After` header would say it.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Stage 1 as the pipeline calls it.
pub async fn stage(
    auth: &Auth,
    req: &http::request::Parts,
    route: &Route,
    peer: SocketAddr,
    public: &crate::proxy::PublicOrigin,
) -> Result<Caller, RegistryError> {
    auth.authorize(Attempt {
        method: &req.method,
        route,
        query: req.uri.query(),
        headers: &req.headers,
        peer,
        public_origin: public.as_url(),
    })
    .await
    .map_err(RegistryError::from)
}

impl Auth {
    /// Whether `_catalog` answers are filtered by the rules (auth is on).
    pub fn filters_catalog(&self) -> bool {
        self.mode != AuthMode::None
    }

    /// Whether `account` may see who deleted tags of `repo` (the list of
    /// removed tags itself needs only `pull`): with auth off anyone, else
    /// whoever may `delete` there or has `admin` (there, or everywhere).
    pub fn sees_deleters(&self, account: Option<&str>, repo: &str) -> bool {
        let rights = [Action::Delete, Action::Admin];
        self.mode == AuthMode::None
            || rights
                .iter()
                .any(|a| self.rules().allowed(account, repo).contains(*a))
            || self
                .rules()
                .permits(account, "*", ActionSet::of(&[Action::Admin]))
    }
}

/// Audits a delete forwarded upstream: who, repository, reference, digest, status.
pub fn audit_delete(
    auth: &Auth,
    method: &Method,
    route: &Route,
    caller: &Caller,
    peer: SocketAddr,
    resp: &Result<http::Response<crate::body::ProxyBody>, RegistryError>,
) {
    if *method != Method::DELETE {
        return;
    }
    let reference = match route {
        Route::Manifest { reference, .. } => Some(reference.as_str()),
        Route::Blob { digest, .. } | Route::Referrers { digest, .. } => Some(digest.as_str()),
        Route::TagReference { tag, .. } | Route::RestoreTag { tag, .. } => Some(tag.as_str()),
        Route::Upload { .. }
        | Route::UploadStart { .. }
        | Route::TagsList { .. }
        | Route::DeletedTags { .. }
        | Route::DeleteTags { .. }
        | Route::Base
        | Route::Catalog => None,
    };
    let status = match resp {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    let digest = resp
        .as_ref()
        .ok()
        .and_then(|r| r.headers().get("docker-content-digest"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| reference.filter(|r| r.contains(':')).map(str::to_owned));
    let mut e = Event::new("delete", peer.ip());
    e.account = caller.account.as_deref();
    e.method = Some(method.as_str());
    e.repository = route.repository().map(|r| r.as_str());
    e.reference = reference;
    e.digest = digest.as_deref();
    e.status = Some(status);
    auth.audit.record(&e);
}
