//! What `regate serve` prints once it listens: the URL clients use, the CA
//! to trust and the commands that trust it (with the real host:port), the
//! admin URL and how to add a user. Plain text on stdout; logs stay on
//! stderr.

use std::net::SocketAddr;

use crate::config::{AuthMode, Settings};
use crate::server::RunningServer;

/// `host:port` as clients write it: `localhost` for loopback (the dev
/// certificate names it), `public_url` when set.
fn client_host(settings: &Settings, addr: SocketAddr) -> String {
    if let Some(p) = &settings.server.public_url {
        return p.authority.clone();
    }
    if addr.ip().is_loopback() {
        format!("localhost:{}", addr.port())
    } else if addr.ip().is_unspecified() {
        format!("<this host's name>:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The block printed when regate is ready.
pub fn text(settings: &Settings, running: &RunningServer) -> String {
    let host = client_host(settings, running.tls_addr);
    let mut s = format!(
        "\nregate is ready: https://{host}/v2/ -> {}\n",
        running.upstream_origin
    );
    let ca = settings
        .server
        .tls_cert
        .parent()
        .map(|d| d.join("ca.crt"))
        .filter(|p| p.is_file());
    match ca {
        Some(ca) => {
            let ca = ca.display();
            s.push_str(&format!(
                "\nTrust its CA ({ca}) on each client machine, as root:\n  docker:  mkdir -p /etc/docker/certs.d/{host} && cp {ca} /etc/docker/certs.d/{host}/ca.crt\n  podman, skopeo, buildah:  mkdir -p /etc/containers/certs.d/{host} && cp {ca} /etc/containers/certs.d/{host}/ca.crt\n"
            ));
        }
        None => s.push_str(&format!(
            "\nClients must trust the CA that signed {}.\n",
            settings.server.tls_cert.display()
        )),
    }
    s.push_str(&format!(
        "\nTry it:  podman login {host}  then  podman push IMAGE {host}/team/app:v1\n"
    ));
    if let Some(admin) = running.admin_addr {
        s.push_str(&format!(
            "\nAdmin (plain HTTP): http://{admin}  (/admin/status, /metrics; `regate gc run --admin http://{admin}`)\n"
        ));
    }
    match settings.auth.mode {
        AuthMode::None => s.push_str(
            "\nAuth is off: anyone who reaches the port may push and delete. To require accounts, set [auth] mode = \"basic\", htpasswd = \"config/htpasswd\", add [[acl]] rules, and add users with `regate passwd add NAME`.\n",
        ),
        AuthMode::Basic | AuthMode::Token => s.push_str(&format!(
            "\nAdd a user:  regate passwd add NAME --file {}  (read at once; rules in [[acl]], reloaded on SIGHUP)\n",
            settings
                .auth
                .htpasswd
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "config/htpasswd".into())
        )),
    }
    s
}
