//! One run at a time in the cluster for work other than GC (retention): a
//! session-level advisory lock on a connection of its own, held for the
//! run, and a row in `regate_cluster_runs` naming the replica, the account
//! and the start, so a run asked of another replica meanwhile is refused
//! naming it (409). A replica that dies drops its session and the lock with
//! it. Unlike the GC lease nothing is killed when the connection breaks
//! mid-run: the run goes on (its deletes still take the cluster's tag locks
//! and check each tag's digest), and a run started elsewhere meanwhile is
//! possible.

use std::sync::Arc;

use postgres::Client;

use super::{Cluster, ClusterError, LOCK_CLASS, LOCK_RETENTION};

/// The kinds of run the lease keeps to one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Retention,
}

impl RunKind {
    fn as_str(self) -> &'static str {
        match self {
            RunKind::Retention => "retention",
        }
    }

    fn lock_key(self) -> i32 {
        match self {
            RunKind::Retention => LOCK_RETENTION,
        }
    }
}

/// Held for a run; [`RunLease::release`] gives it back, and so does
/// dropping it (without waiting for the lock to be free).
pub struct RunLease {
    client: Option<Client>,
    kind: RunKind,
    replica: String,
}

impl RunLease {
    /// Gives the lease back, returning once the lock is free (off the async
    /// threads: the client is synchronous).
    pub async fn release(mut self) {
        if let Some(client) = self.client.take() {
            let (kind, replica) = (self.kind, self.replica.clone());
            let _ = tokio::task::spawn_blocking(move || free(client, kind, &replica)).await;
        }
    }
}

impl Drop for RunLease {
    /// On a thread of its own: the synchronous client must not be used or
    /// dropped on an async thread.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let (kind, replica) = (self.kind, self.replica.clone());
        let _ = std::thread::Builder::new()
            .name("regate-run-lease".into())
            .spawn(move || free(client, kind, &replica));
    }
}

/// Deletes the run's row and frees the lock; closing the session (the
/// client dropped here) frees the lock even if the statements fail.
fn free(mut client: Client, kind: RunKind, replica: &str) {
    let _ = client.execute(
        "DELETE FROM regate_cluster_runs WHERE kind = $1 AND replica = $2",
        &[&kind.as_str(), &replica],
    );
    let _ = client.execute(
        "SELECT pg_advisory_unlock($1, $2)",
        &[&LOCK_CLASS, &kind.lock_key()],
    );
}

impl Cluster {
    /// Takes the lease of `kind` for a run asked by `account`, or says
    /// which replica's run holds it ([`ClusterError::RunningElsewhere`]).
    pub async fn run_lease(
        self: &Arc<Self>,
        kind: RunKind,
        account: &str,
    ) -> Result<RunLease, ClusterError> {
        let (me, account) = (Arc::clone(self), account.to_owned());
        tokio::task::spawn_blocking(move || me.run_lease_blocking(kind, &account))
            .await
            .expect("run lease panicked")
    }

    fn run_lease_blocking(&self, kind: RunKind, account: &str) -> Result<RunLease, ClusterError> {
        let mut client = self.db.connector().connect("run-lease")?;
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &kind.lock_key()],
            )?
            .get(0);
        if !got {
            let row = client.query_opt(
                "SELECT replica, account,
                        to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                 FROM regate_cluster_runs WHERE kind = $1",
                &[&kind.as_str()],
            )?;
            // The holder writes its row just after taking the lock.
            let (replica, account, started_at) = match row {
                Some(r) => (r.get(0), r.get(1), r.get(2)),
                None => ("(starting)".into(), "?".into(), "now".into()),
            };
            return Err(ClusterError::RunningElsewhere {
                kind: kind.as_str(),
                replica,
                account,
                started_at,
            });
        }
        client.execute(
            "INSERT INTO regate_cluster_runs (kind, replica, account) VALUES ($1, $2, $3)
             ON CONFLICT (kind) DO UPDATE SET replica = $2, account = $3, started_at = now()",
            &[&kind.as_str(), &self.replica, &account],
        )?;
        Ok(RunLease {
            client: Some(client),
            kind,
            replica: self.replica.clone(),
        })
    }
}
