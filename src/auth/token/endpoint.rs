//! The token endpoint, `/auth/token` on the registry listeners: the Docker
//! `GET` form (Basic credentials, `service`, repeated `scope`, `account`,
//! `offline_token`, `client_id`) and the OAuth2 `POST` form
//! (`grant_type=password` or `refresh_token`). Answers
//! `{token, access_token, expires_in, issued_at[, refresh_token]}`.
//!
//! Owns [`EndpointError`] and its conversion to [`RegistryError`]. Calls the
//! [`Auth`] facade for passwords and rules and [`super::Tokens`] to sign.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::{grant, Scope, TokenError};
use crate::auth::credentials::{self, MalformedAuth, Presented};
use crate::auth::passwords::LoginError;
use crate::auth::{retry_after_secs, Auth};
use crate::body::{read_capped, CappedReadError, ProxyBody};
use crate::error::{ErrorCode, RegistryError};

/// Where the issuer is served.
pub const PATH: &str = "/auth/token";

/// Largest POST form read.
const MAX_FORM: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("the token endpoint is only served in auth.mode = \"token\"")]
    NotServed,
    #[error("use GET or POST")]
    Method,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Malformed(MalformedAuth),
    #[error(transparent)]
    Login(LoginError),
    #[error("invalid refresh token: {0}")]
    Refresh(TokenError),
    #[error(transparent)]
    Sign(TokenError),
}

impl From<EndpointError> for RegistryError {
    fn from(e: EndpointError) -> Self {
        let msg = e.to_string();
        let basic = || HeaderValue::from_static("Basic realm=\"regate token\"");
        match e {
            EndpointError::NotServed => {
                RegistryError::new(StatusCode::NOT_FOUND, ErrorCode::Unsupported, msg)
            }
            EndpointError::Method => {
                RegistryError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported, msg)
            }
            EndpointError::BadRequest(_) => {
                RegistryError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, msg)
            }
            EndpointError::Malformed(m) if m.is_bad_request() => {
                RegistryError::new(StatusCode::BAD_REQUEST, ErrorCode::Unauthorized, msg)
            }
            EndpointError::Malformed(_)
            | EndpointError::Login(LoginError::Wrong)
            | EndpointError::Refresh(_) => {
                RegistryError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, msg)
                    .with_header(header::WWW_AUTHENTICATE, basic())
            }
            EndpointError::Login(LoginError::TooMany(wait)) => RegistryError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                msg,
            )
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            ),
            EndpointError::Login(LoginError::Internal(_)) | EndpointError::Sign(_) => {
                RegistryError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unknown, msg)
            }
        }
    }
}

/// The parameters of either form.
#[derive(Default)]
struct Params {
    service: Option<String>,
    scopes: Vec<String>,
    account: Option<String>,
    offline: bool,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

fn params(query: &[u8], post: bool) -> Params {
    let mut p = Params::default();
    for (k, v) in form_urlencoded::parse(query) {
        let v = v.into_owned();
        match &*k {
            "service" => p.service = Some(v),
            "scope" => p.scopes.push(v),
            "account" => p.account = Some(v),
            "offline_token" => p.offline |= v == "true",
            "access_type" if post => p.offline |= v == "offline",
            "grant_type" if post => p.grant_type = Some(v),
            "username" if post => p.username = Some(v),
            "password" if post => p.password = Some(v),
            "refresh_token" if post => p.refresh_token = Some(v),
            _ => {}
        }
    }
    p
}

/// Serves one request to `/auth/token`.
pub async fn serve(
    auth: &Auth,
    req: Request<ProxyBody>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, EndpointError> {
    let tokens = auth.tokens().ok_or(EndpointError::NotServed)?;
    let post = match *req.method() {
        Method::GET => false,
        Method::POST => true,
        _ => return Err(EndpointError::Method),
    };
    let presented = credentials::presented(req.headers()).map_err(EndpointError::Malformed)?;
    let p = if post {
        params(&read_form(req.into_body()).await?, true)
    } else {
        params(req.uri().query().unwrap_or("").as_bytes(), false)
    };
    if let Some(s) = &p.service {
        if s != tokens.service() {
            return Err(EndpointError::BadRequest(format!("unknown service {s:?}")));
        }
    }
    let scopes = Scope::parse_all(p.scopes.iter().map(String::as_str))
        .map_err(|e| EndpointError::BadRequest(e.to_string()))?;

    // Who is asking.
    let (account, from_refresh) = match (post, p.grant_type.as_deref()) {
        (true, Some("password")) => {
            let (Some(u), Some(pw)) = (&p.username, &p.password) else {
                return Err(EndpointError::BadRequest(
                    "grant_type=password needs username and password".into(),
                ));
            };
            auth.login(u, pw, peer, "token endpoint login")
                .await
                .map_err(EndpointError::Login)?;
            (Some(u.clone()), false)
        }
        (true, Some("refresh_token")) => {
            let rt = p.refresh_token.as_deref().ok_or_else(|| {
                EndpointError::BadRequest("grant_type=refresh_token needs refresh_token".into())
            })?;
            let grant = tokens.verify_refresh(rt).map_err(EndpointError::Refresh)?;
            if auth.password_binding(&grant.account).as_deref() != Some(grant.binding.as_str()) {
                return Err(EndpointError::Refresh(TokenError::Stale));
            }
            (Some(grant.account), true)
        }
        (true, other) => {
            return Err(EndpointError::BadRequest(format!(
                "grant_type {:?} is not supported; use password or refresh_token",
                other.unwrap_or("")
            )))
        }
        (false, _) => match presented {
            Presented::Nothing => (None, false),
            Presented::Basic { user, password } => {
                auth.login(&user, &password, peer, "token endpoint login")
                    .await
                    .map_err(EndpointError::Login)?;
                (Some(user), false)
            }
            Presented::Bearer(_) => return Err(EndpointError::Malformed(MalformedAuth::Scheme)),
        },
    };
    if let (Some(asked), Some(acc)) = (&p.account, &account) {
        if asked != acc {
            return Err(EndpointError::BadRequest(
                "account does not match the credentials".into(),
            ));
        }
    }

    let access = grant(&auth.rules(), account.as_deref(), &scopes);
    let issued = tokens
        .issue(account.as_deref(), &access)
        .map_err(EndpointError::Sign)?;
    let refresh = match &account {
        Some(a) if p.offline || from_refresh => match auth.password_binding(a) {
            Some(b) => Some(tokens.issue_refresh(a, &b).map_err(EndpointError::Sign)?),
            None => None,
        },
        _ => None,
    };
    let issued_at = time::OffsetDateTime::from(issued.issued_at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued_at,
    });
    if let Some(r) = refresh {
        body["refresh_token"] = serde_json::Value::String(r);
    }
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut resp = Response::new(crate::body::full(bytes.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Reads a small request body, refusing more than [`MAX_FORM`] bytes.
async fn read_form(body: ProxyBody) -> Result<Bytes, EndpointError> {
    read_capped(body, MAX_FORM).await.map_err(|e| match e {
        CappedReadError::TooLarge(_) => {
            EndpointError::BadRequest(format!("the form must be under {MAX_FORM} bytes"))
        }
        CappedReadError::Read(e) => EndpointError::BadRequest(format!("reading the form: {e}")),
    })
}
