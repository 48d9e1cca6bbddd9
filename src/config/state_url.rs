//! `[state] url`: the PostgreSQL database regate keeps its state in when
//! several replicas share it (libpq URL conventions:
//! `postgres://user:password@host:port/db?sslmode=verify-full&sslrootcert=ca.crt`).
//!
//! Owns the parse and the check of that one value, and its redacted form:
//! the URL carries a password, so [`StateUrl`] prints (Display and Debug) with
//! the password replaced by `***`, and every message about it uses that form.
//! Also owns the TLS part of the URL ([`StateTls`]): libpq's `sslmode` and
//! `sslrootcert`, whose CA file is read here, once, so `check-config` finds a
//! missing or broken file. How those settings become a connection is
//! `crate::pg_connect`'s.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;

/// libpq's `sslmode`, as regate honours it (see the README, "Several
/// replicas"); `allow` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS, the server's chain checked against `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The CA file `sslrootcert` names and the certificates read from it.
#[derive(Clone)]
pub struct RootCert {
    pub path: String,
    pub certs: Vec<CertificateDer<'static>>,
}

/// The TLS settings of `state.url`.
#[derive(Clone)]
pub struct StateTls {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
}

impl StateTls {
    /// What the server's certificate is checked for, in words.
    pub fn describe(&self) -> String {
        match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => "sslmode=disable: no TLS".into(),
            (SslMode::VerifyFull, Some(r)) => format!(
                "sslmode=verify-full: TLS, the server's certificate must be signed by the CA in {} and name the host",
                r.path
            ),
            (SslMode::Prefer, Some(r)) => format!(
                "sslmode=prefer: TLS with a certificate signed by the CA in {} when the server offers TLS, but plain TCP when it does not; sslmode=verify-full never falls back and also checks the host name",
                r.path
            ),
            (mode, Some(r)) => format!(
                "sslmode={}: TLS, the server's certificate must be signed by the CA in {} (its host name is not checked; sslmode=verify-full checks it)",
                mode.as_str(),
                r.path
            ),
            (SslMode::Prefer, None) => "sslmode=prefer (libpq's default): TLS when the server offers it, else plain, and the server's certificate is not checked; set sslmode=verify-full and sslrootcert=<CA file> to authenticate the server".into(),
            (mode, None) => format!(
                "sslmode={}: TLS, but the server's certificate is not checked (libpq's meaning), so anyone on the path can pose as the server; set sslmode=verify-full and sslrootcert=<CA file> to authenticate it",
                mode.as_str()
            ),
        }
    }

    /// Whether the server is always authenticated (TLS, its chain checked;
    /// `prefer` may fall back to plain TCP).
    pub fn verifies(&self) -> bool {
        !matches!(self.mode, SslMode::Disable | SslMode::Prefer) && self.root_cert.is_some()
    }
}

/// A checked `state.url`; the password never leaves through Display or Debug.
#[derive(Clone)]
pub struct StateUrl {
    text: String,
    config: postgres::Config,
    tls: StateTls,
}

/// URL parameters of libpq's TLS that regate does not support.
const UNSUPPORTED_SSL_PARAMS: &[&str] =
    &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

const SHAPE: &str = "postgres://USER:PASSWORD@HOST:PORT/DATABASE";

impl StateUrl {
    /// Parses and checks `text`: scheme postgres/postgresql, a host, a user,
    /// a database; `sslmode` and `sslrootcert` as libpq reads them, the CA
    /// file read and checked here.
    pub fn parse(text: &str) -> Result<StateUrl, String> {
        let redacted = redact(text);
        let scheme_ok = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !scheme_ok {
            return Err(format!(
                "{redacted:?} is not a PostgreSQL URL; write {SHAPE}"
            ));
        }
        let (rest, ssl) = take_ssl_params(text).map_err(|m| format!("{redacted:?}: {m}"))?;
        let mut config = postgres::Config::from_str(&rest)
            .map_err(|e| format!("{redacted:?} cannot be read ({e}); write {SHAPE}"))?;
        if config.get_hosts().is_empty() {
            return Err(format!("{redacted:?} names no host; write {SHAPE}"));
        }
        if config.get_dbname().is_none_or(str::is_empty) {
            return Err(format!(
                "{redacted:?} names no database; add it after the host: {SHAPE}"
            ));
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err(format!("{redacted:?} names no user; write {SHAPE}"));
        }
        let tls = ssl.check().map_err(|m| format!("{redacted:?}: {m}"))?;
        let unix_host = config
            .get_hosts()
            .iter()
            .any(|h| !matches!(h, postgres::config::Host::Tcp(_)));
        if unix_host && tls.mode != SslMode::Disable && tls.mode != SslMode::Prefer {
            return Err(format!(
                "{redacted:?}: sslmode={} with a Unix socket host: PostgreSQL speaks no TLS on Unix sockets; use sslmode=disable there, or a TCP host",
                tls.mode.as_str()
            ));
        }
        // tokio-postgres knows disable, prefer and require; the verify
        // modes are require plus the checks of `pg_connect`'s verifier.
        config.ssl_mode(match tls.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        Ok(StateUrl {
            text: text.to_owned(),
            config,
            tls,
        })
    }

    /// The connection settings, password included: for `pg_connect` only.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// The TLS settings (`sslmode`, `sslrootcert`).
    pub fn tls(&self) -> &StateTls {
        &self.tls
    }

    /// Whether the URL sets the libpq parameter `name` itself.
    pub fn sets(&self, name: &str) -> bool {
        self.text
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(name)))
    }
}

/// The TLS parameters of a URL before they are checked.
struct SslParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (tokio-postgres
/// reads neither verify mode nor `sslrootcert`); the rest is left as written.
fn take_ssl_params(text: &str) -> Result<(String, SslParams), String> {
    let mut ssl = SslParams {
        mode: None,
        root_cert: None,
    };
    let Some((head, query)) = text.split_once('?') else {
        return Ok((text.to_owned(), ssl));
    };
    let mut kept = Vec::new();
    for param in query.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| format!("the value of {key} is not UTF-8 once decoded"))
        };
        match key {
            "sslmode" => ssl.mode = Some(decoded()?),
            "sslrootcert" => ssl.root_cert = Some(decoded()?),
            k if UNSUPPORTED_SSL_PARAMS.contains(&k) => {
                return Err(format!(
                    "{k} is not supported (regate presents no client certificate to PostgreSQL); remove it and log in with the password of the URL"
                ))
            }
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((rest, ssl))
}

impl SslParams {
    /// The mode (libpq's default: prefer) and the CA file, read and checked.
    fn check(self) -> Result<StateTls, String> {
        let mode = match self.mode.as_deref() {
            None => SslMode::Prefer,
            Some("allow") => return Err("sslmode=allow is not supported (it tries plain TCP first); use sslmode=verify-full with sslrootcert, require, prefer or disable".into()),
            Some(m) => SslMode::parse(m).ok_or_else(|| {
                format!("sslmode={m:?} is not a mode; use disable, prefer, require, verify-ca or verify-full")
            })?,
        };
        let root_cert = match self.root_cert {
            None => None,
            Some(_) if mode == SslMode::Disable => {
                return Err("sslrootcert is set but sslmode=disable turns TLS off; use sslmode=verify-full to check the server against that CA, or remove sslrootcert".into())
            }
            Some(path) if path == "system" => {
                return Err("sslrootcert=system is not supported; name the CA file that signed the server's certificate (sslrootcert=/path/to/ca.crt)".into())
            }
            Some(path) => Some(read_root_cert(&path)?),
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(format!(
                "sslmode={} needs the CA that signed the server's certificate: add sslrootcert=/path/to/ca.crt (regate does not read ~/.postgresql/root.crt)",
                mode.as_str()
            ));
        }
        Ok(StateTls { mode, root_cert })
    }
}

/// Reads the PEM certificates of `sslrootcert`.
fn read_root_cert(path: &str) -> Result<RootCert, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!("sslrootcert={path}: cannot read ({e}); point it at the PEM file of the CA that signed the server's certificate")
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert={path}: not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert={path}: no PEM certificate found; expected a file starting with -----BEGIN CERTIFICATE-----"
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(format!(
            "sslrootcert={path}: none of its certificates can be used as a CA (not X.509 v3?); point it at the CA that signed the server's certificate"
        ));
    }
    Ok(RootCert {
        path: path.to_owned(),
        certs,
    })
}

impl fmt::Display for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.text))
    }
}

impl fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateUrl({:?})", redact(&self.text))
    }
}

/// `text` with the password of its user part and any `password=` parameter
/// replaced by `***`.
pub fn redact(text: &str) -> String {
    let (head, query) = match text.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (text, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            // The user part ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{userinfo}@{hosts}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let u =
            StateUrl::parse("postgres://regate:s3cr%40t@db.example:5433/regate?sslmode=disable")
                .unwrap();
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(
                shown.contains("regate:***@db.example:5433/regate"),
                "{shown}"
            );
        }
        assert_eq!(
            redact("postgresql://u@h/d?password=x&sslmode=prefer"),
            "postgresql://u@h/d?password=***&sslmode=prefer"
        );
    }

    #[test]
    fn what_is_refused_is_named() {
        for (url, says) in [
            ("mysql://u:p@h/d", "not a PostgreSQL URL"),
            ("postgres://u:p@h:5432/", "names no database"),
            ("postgres://u:p@h/d?nonsense=1", "cannot be read"),
            (
                "postgres://u:p@h/d?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            ("postgres://u:p@h/d?sslmode=verify", "not a mode"),
            ("postgres://u:p@h/d?sslmode=verify-full", "add sslrootcert="),
            ("postgres://u:p@h/d?sslmode=verify-ca", "add sslrootcert="),
            (
                "postgres://u:p@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
                "sslrootcert=/nonexistent/ca.crt: cannot read",
            ),
            (
                "postgres://u:p@h/d?sslmode=disable&sslrootcert=/nonexistent/ca.crt",
                "sslmode=disable turns TLS off",
            ),
            (
                "postgres://u:p@h/d?sslmode=verify-full&sslrootcert=system",
                "sslrootcert=system is not supported",
            ),
            (
                "postgres://u:p@h/d?sslcert=c.crt&sslkey=c.key",
                "sslcert is not supported",
            ),
            (
                "postgres://u:p@%2Frun%2Fpostgresql/d?sslmode=require",
                "Unix socket",
            ),
        ] {
            let e = StateUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains(":p@"), "{url}: {e}");
        }
    }

    /// A CA certificate in PEM, as a file in `dir`.
    fn ca_file(dir: &std::path::Path) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(&path, cert.pem()).unwrap();
        path.display().to_string()
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_as_libpq_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path());
        let base = "postgres://u:p@db.example:5432/d";
        let parse = |q: &str| StateUrl::parse(&format!("{base}{q}")).unwrap();
        use postgres::config::SslMode as Wire;
        for (query, mode, wire, verifies) in [
            ("", SslMode::Prefer, Wire::Prefer, false),
            ("?sslmode=disable", SslMode::Disable, Wire::Disable, false),
            ("?sslmode=prefer", SslMode::Prefer, Wire::Prefer, false),
            ("?sslmode=require", SslMode::Require, Wire::Require, false),
            (
                &format!("?sslmode=prefer&sslrootcert={ca}") as &str,
                SslMode::Prefer,
                Wire::Prefer,
                false,
            ),
            (
                &format!("?sslmode=require&sslrootcert={ca}") as &str,
                SslMode::Require,
                Wire::Require,
                true,
            ),
            (
                &format!("?sslrootcert={ca}&sslmode=verify-ca"),
                SslMode::VerifyCa,
                Wire::Require,
                true,
            ),
            (
                &format!("?sslmode=verify-full&sslrootcert={ca}&connect_timeout=7"),
                SslMode::VerifyFull,
                Wire::Require,
                true,
            ),
        ] {
            let u = parse(query);
            assert_eq!(u.tls().mode, mode, "{query}");
            assert_eq!(u.config().get_ssl_mode(), wire, "{query}");
            assert_eq!(u.tls().verifies(), verifies, "{query}");
            assert_eq!(u.config().get_dbname(), Some("d"));
        }
        // The other parameters still reach tokio-postgres; a percent-encoded path is decoded.
        let encoded = ca.replace('/', "%2F");
        let u = parse(&format!(
            "?connect_timeout=7&sslrootcert={encoded}&sslmode=verify-full&application_name=x"
        ));
        assert_eq!(
            u.config().get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert_eq!(u.config().get_application_name(), Some("x"));
        assert_eq!(u.tls().root_cert.as_ref().unwrap().path, ca);
        assert_eq!(u.tls().root_cert.as_ref().unwrap().certs.len(), 1);
        assert!(u.sets("application_name") && !u.sets("keepalives"));
        assert!(
            u.tls().describe().contains("name the host"),
            "{}",
            u.tls().describe()
        );
        assert!(parse("?sslmode=require")
            .tls()
            .describe()
            .contains("not checked"));
        // A file that holds no certificate is named.
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = StateUrl::parse(&format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        assert!(e.contains("no PEM certificate found"), "{e}");
    }
}
