//! The test fixture: a real `docker-registry` and regate on ephemeral ports
//! with a generated CA, real clients (skopeo), and images built in memory.
//! Every handle stops what it started when dropped.
#![allow(dead_code, unused_imports)]

pub mod auth;
pub mod gc;
pub mod hostile;
pub mod images;
pub mod raw_http;
pub mod regate;
pub mod registry;
pub mod relay;
pub mod skopeo;
pub mod storage;

pub use images::{Blob, Image};
pub use regate::Regate;
pub use registry::Registry;

/// Fails loudly when a tool the suite needs is missing: never a silent skip.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed; the suite needs it. Run `.ci/run` (it installs docker-registry and skopeo) or `apt-get install -y docker-registry skopeo`"
    );
}
