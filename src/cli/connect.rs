//! How the client commands (`regate tags ...`, `regate fsck`) connect to a
//! registry: the `--user`/`--password-stdin`/`--cacert` flags, and the
//! credential lookup of [`crate::client::credentials`] behind them.

use std::io::Read as _;
use std::path::PathBuf;

use clap::Args;

use crate::client::{credentials, RegistryClient, Scheme};

#[derive(Args, Debug, Clone)]
pub struct Connect {
    /// User name (password from --password-stdin, REGATE_PASSWORD, or the docker/podman auth file).
    #[arg(long, short)]
    pub user: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// A CA certificate to trust (besides the system's and /etc/docker/certs.d/<host>/ca.crt).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
}

impl Connect {
    /// A client for `scheme://registry` with the credentials these flags,
    /// the environment or the auth files give for `registry`.
    pub fn client(&self, scheme: Scheme, registry: &str) -> Result<RegistryClient, String> {
        let password = if self.password_stdin {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            Some(s.trim_end_matches(['\r', '\n']).to_owned())
        } else {
            std::env::var("REGATE_PASSWORD")
                .ok()
                .filter(|_| self.user.is_some())
        };
        let creds = credentials::lookup(registry, self.user.clone(), password);
        RegistryClient::with_scheme(scheme, registry, self.cacert.as_deref(), creds)
            .map_err(|e| e.to_string())
    }
}
