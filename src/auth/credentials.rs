//! Reading the `Authorization` header: what the client presented, or why the
//! header is unusable. Owns [`Presented`], whose `Debug` never shows a
//! password or a token. Calls nothing but base64.

use std::fmt;

use base64::Engine as _;
use http::{header, HeaderMap};

/// Longest `Authorization` header regate reads (a JWT with many scopes fits).
pub const MAX_HEADER_LEN: usize = 16 * 1024;
/// Longest user name accepted.
pub const MAX_USER_LEN: usize = 256;

/// What a client sent.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    /// No credentials (also `Basic Og==`, the empty user and password that
    /// skopeo sends when it has none).
    Nothing,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presented::Nothing => f.write_str("Nothing"),
            Presented::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Presented::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedAuth {
    #[error("more than one Authorization header")]
    Repeated,
    #[error("the Authorization header is too long")]
    TooLong,
    #[error("the Authorization header is not ASCII text")]
    NotText,
    #[error("unsupported Authorization scheme; use Basic or Bearer")]
    Scheme,
    #[error("the Basic credentials are not valid base64 of user:password")]
    BasicEncoding,
    #[error("the user name is empty, too long or contains control characters")]
    UserName,
    #[error("the Bearer token is empty or not a token")]
    BearerToken,
}

impl MalformedAuth {
    /// Whether the header itself is unreadable (400) rather than merely not
    /// credentials regate can use (401 with a challenge).
    pub fn is_bad_request(&self) -> bool {
        match self {
            MalformedAuth::Repeated | MalformedAuth::TooLong | MalformedAuth::NotText => true,
            MalformedAuth::Scheme
            | MalformedAuth::BasicEncoding
            | MalformedAuth::UserName
            | MalformedAuth::BearerToken => false,
        }
    }
}

/// Reads the credentials of a request.
pub fn presented(headers: &HeaderMap) -> Result<Presented, MalformedAuth> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Presented::Nothing);
    };
    if values.next().is_some() {
        return Err(MalformedAuth::Repeated);
    }
    if value.len() > MAX_HEADER_LEN {
        // An over-long token is a bad token (401, invalid_token), not an unreadable header.
        let bearer = value
            .as_bytes()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "));
        return Err(if bearer {
            MalformedAuth::BearerToken
        } else {
            MalformedAuth::TooLong
        });
    }
    let text = value.to_str().map_err(|_| MalformedAuth::NotText)?;
    parse(text)
}

/// Parses the value of an `Authorization` header.
pub fn parse(text: &str) -> Result<Presented, MalformedAuth> {
    let (scheme, rest) = text.trim().split_once(' ').ok_or(MalformedAuth::Scheme)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        parse_basic(rest)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
        if rest.is_empty() || !rest.bytes().all(token_char) {
            return Err(MalformedAuth::BearerToken);
        }
        Ok(Presented::Bearer(rest.to_owned()))
    } else {
        Err(MalformedAuth::Scheme)
    }
}

fn parse_basic(b64: &str) -> Result<Presented, MalformedAuth> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| MalformedAuth::BasicEncoding)?;
    let text = String::from_utf8(raw).map_err(|_| MalformedAuth::BasicEncoding)?;
    let (user, password) = text.split_once(':').ok_or(MalformedAuth::BasicEncoding)?;
    if user.is_empty() && password.is_empty() {
        return Ok(Presented::Nothing);
    }
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(MalformedAuth::UserName);
    }
    Ok(Presented::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn reads_basic_bearer_and_anonymous() {
        assert_eq!(
            parse(&basic("alice:pw:with:colons")).unwrap(),
            Presented::Basic {
                user: "alice".into(),
                password: "pw:with:colons".into()
            }
        );
        assert_eq!(parse("Basic Og==").unwrap(), Presented::Nothing);
        assert_eq!(
            parse("bearer abc.def.ghi").unwrap(),
            Presented::Bearer("abc.def.ghi".into())
        );
        assert_eq!(presented(&HeaderMap::new()).unwrap(), Presented::Nothing);
    }

    #[test]
    fn malformed_headers_are_errors() {
        for (text, want) in [
            ("Basic", MalformedAuth::Scheme),
            ("Digest x=y", MalformedAuth::Scheme),
            ("Basic !!!", MalformedAuth::BasicEncoding),
            (&basic("nocolon")[..], MalformedAuth::BasicEncoding),
            (&basic(":pw")[..], MalformedAuth::UserName),
            (&basic("a\u{1}b:pw")[..], MalformedAuth::UserName),
            ("Bearer a b", MalformedAuth::BearerToken),
        ] {
            assert_eq!(parse(text).unwrap_err(), want, "{text}");
        }
        let mut h = HeaderMap::new();
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Og=="),
        );
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Og=="),
        );
        assert_eq!(presented(&h).unwrap_err(), MalformedAuth::Repeated);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff").unwrap(),
        );
        assert_eq!(presented(&h).unwrap_err(), MalformedAuth::NotText);
        let mut h = HeaderMap::new();
        let long = "A".repeat(MAX_HEADER_LEN);
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {long}").parse().unwrap(),
        );
        assert_eq!(presented(&h).unwrap_err(), MalformedAuth::TooLong);
        h.insert(
            header::AUTHORIZATION,
            format!("bearer {long}").parse().unwrap(),
        );
        assert_eq!(presented(&h).unwrap_err(), MalformedAuth::BearerToken);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let p = parse(&basic("alice:hunter2")).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        let t = Presented::Bearer("secret.token.here".into());
        assert!(!format!("{t:?}").contains("secret"));
    }

    proptest::proptest! {
        #[test]
        fn any_basic_credential_round_trips_or_is_refused(user in "\\PC{0,20}", pw in "\\PC{0,20}") {
            // RFC 7617: a user-id cannot contain a colon (the first one splits).
            proptest::prop_assume!(!user.contains(':'));
            let header = basic(&format!("{user}:{pw}"));
            match parse(&header) {
                Ok(Presented::Basic { user: u, password: p }) => {
                    proptest::prop_assert_eq!(u, user);
                    proptest::prop_assert_eq!(p, pw);
                }
                Ok(Presented::Nothing) => proptest::prop_assert!(user.is_empty() && pw.is_empty()),
                Ok(Presented::Bearer(_)) => proptest::prop_assert!(false),
                Err(e) => proptest::prop_assert!(user.is_empty() || user.chars().any(char::is_control), "{e}"),
            }
        }

        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text);
        }
    }
}
