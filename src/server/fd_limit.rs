//! The file-descriptor limit the connection budget needs: each client
//! connection can hold two descriptors (the client's and one to the
//! registry). At start-up the soft limit is raised towards the hard one, and
//! if even that is too low for `server.max_connections` the log says so.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors beyond the connections: listeners, the state database, log
/// files, the managed registry's pipes.
const RESERVE: u64 = 256;

/// Raises `RLIMIT_NOFILE` as far as `max_connections` needs (and the hard
/// limit allows); warns when it cannot.
pub fn ensure_for(max_connections: usize) {
    let want = 2 * max_connections as u64 + RESERVE;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= want {
        return;
    }
    let raised = want.min(hard);
    if raised > soft {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    if now < want {
        tracing::warn!(
            open_file_limit = now,
            max_connections,
            "server.max_connections needs about {want} open files (two per connection); lower server.max_connections or raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd)"
        );
    }
}
