//! SIGHUP: read the configuration file again and put in force what can
//! change without a restart: the `[[acl]]` rules and `[auth.groups]`.
//!
//! Certificates and the htpasswd file reload themselves when their files
//! change (and certificates on SIGHUP too, in [`crate::tls`]); every other
//! key needs a restart. A file that no longer validates is logged with every
//! problem and the rules in force stay. Owns only this loop.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::Settings;

/// Reloads the rules from `file` on every SIGHUP until `stop`.
pub async fn run(file: PathBuf, auth: Arc<Auth>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: [[acl]] rules reload only on restart");
        return;
    };
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {}
            _ = crate::stop_signal::stopped(&mut stop) => return,
        }
        let path = file.clone();
        let loaded = tokio::task::spawn_blocking(move || Settings::load(&path)).await;
        match loaded {
            Ok(Ok(settings)) => {
                let rules = settings.auth.rules;
                tracing::info!(
                    file = %file.display(),
                    rules = rules.len(),
                    "SIGHUP: [[acl]] rules and [auth.groups] reloaded (other keys take effect on restart)"
                );
                auth.replace_rules(rules);
            }
            Ok(Err(e)) => tracing::error!(
                "SIGHUP: {e}; the rules in force stay until the file is fixed and SIGHUP is sent again"
            ),
            Err(e) => tracing::error!(error = %e, "SIGHUP: the reload task failed"),
        }
    }
}
