//! The parts of the soak tests (`tests/soak.rs`, one instance, and
//! `tests/soak_cluster.rs`, replicas on PostgreSQL): the ledger of what
//! clients were told, the regate process under a killer, the images, the
//! workers (pushers, pullers, deleters), the GC runs, the final checks and
//! the summary.

pub mod checks;
pub mod gc_runs;
pub mod images;
pub mod ledger;
pub mod process;
pub mod summary;
pub mod workers;

use std::path::Path;
use std::time::Duration;

/// Six-field cron (seconds first): a scheduled GC every 8 seconds.
pub const GC_SCHEDULE: &str = "*/8 * * * * *";

/// The keys of the soak's `[gc]` section after the command: the schedule,
/// untagged cleanup, short drain and push window.
pub fn gc_keys() -> String {
    format!("schedule = \"{GC_SCHEDULE}\"\nuntagged = true\ndrain_timeout = \"3s\"\npush_window = \"2s\"\nhold_timeout = \"60s\"")
}

/// A config edit: the GC schedule taken out (for the last clean restart).
pub fn without_schedule(config: &str) -> String {
    config.replace(&format!("schedule = \"{GC_SCHEDULE}\"\n"), "")
}

/// A whole number from the environment (`REGATE_SOAK_SECS`, ...).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
    })
}

/// The clients' HTTP client: trusts only the test CA, long timeout (a
/// request may be held by a closed gate).
pub fn client(ca_cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_cert).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}
