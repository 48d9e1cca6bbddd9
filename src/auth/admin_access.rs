//! Who may call the admin API (`/admin/...` on the admin listener): an
//! account whose rules grant the `admin` action on every repository, that is
//! a rule whose repository pattern is `*` (GC and the write gate act on the
//! whole registry, so a right on some repositories is not enough).
//!
//! The caller proves who they are with Basic credentials from the htpasswd
//! file, in basic and in token mode (the token issuer's own users); failed
//! logins count toward the same rate limit as the registry API's. With
//! `auth.mode = "none"` the admin API is open, like everything else. Owns
//! [`Auth::authorize_admin`]; every admin action that changes something is
//! audited by [`Auth::audit_admin`].

use std::net::SocketAddr;

use http::{HeaderMap, Method};

use super::challenge::Challenge;
use super::credentials::{self, Presented};
use super::{Auth, AuthError, Caller};
use crate::audit::Event;
use crate::config::AuthMode;
use crate::rules::{Action, ActionSet};

/// The repository name the admin right is checked against: only a rule
/// whose pattern covers every name matches it.
const EVERY_REPOSITORY: &str = "*";

impl Auth {
    fn admin_challenge(&self) -> Challenge {
        Challenge::Basic {
            realm: format!("{} admin", self.realm),
        }
    }

    fn audit_admin_refusal(
        &self,
        peer: SocketAddr,
        event: &'static str,
        account: Option<&str>,
        reason: &str,
    ) {
        let mut e = Event::new(event, peer.ip());
        e.account = account;
        e.reason = Some(reason);
        e.repository = Some("(admin API)");
        self.audit.record(&e);
    }

    /// Authenticates an admin API call and checks the `admin` right.
    pub async fn authorize_admin(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Caller, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Caller::new(None));
        }
        let (user, password) = match credentials::presented(headers) {
            Ok(Presented::Basic { user, password }) => (user, password),
            Ok(Presented::Nothing | Presented::Bearer(_)) => {
                return Err(AuthError::Unauthenticated {
                    challenge: self.admin_challenge(),
                })
            }
            Err(source) => {
                self.audit_admin_refusal(peer, "auth_failure", None, &source.to_string());
                return Err(AuthError::Malformed {
                    source,
                    challenge: self.admin_challenge(),
                });
            }
        };
        self.login(&user, &password, peer, "admin API login")
            .await
            .map_err(|source| AuthError::BadLogin {
                source,
                challenge: self.admin_challenge(),
            })?;
        if self.rules().permits(
            Some(&user),
            EVERY_REPOSITORY,
            ActionSet::of(&[Action::Admin]),
        ) {
            return Ok(Caller::new(Some(user)));
        }
        self.audit_admin_refusal(
            peer,
            "denied",
            Some(&user),
            "no rule grants admin on every repository (\"*\")",
        );
        Err(AuthError::Denied {
            account: user,
            action: Action::Admin,
            repository: EVERY_REPOSITORY.to_owned(),
        })
    }

    /// Records an admin call that changes something (GC run, gate change).
    pub fn audit_admin(
        &self,
        caller: &Caller,
        peer: SocketAddr,
        method: &Method,
        path: &str,
        status: u16,
    ) {
        if *method == Method::GET || *method == Method::HEAD {
            return;
        }
        let mut e = Event::new("admin", peer.ip());
        e.account = caller.account.as_deref();
        e.method = Some(method.as_str());
        e.reference = Some(path);
        e.status = Some(status);
        self.audit.record(&e);
    }
}
