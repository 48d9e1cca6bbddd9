//! One connection to PostgreSQL, opened on first use and again after it
//! broke. Blocking: call it from `spawn_blocking` or a thread of its own.
//! Connections are made by `crate::pg_connect` (one connection maker for the
//! state and the cluster).

use std::sync::Mutex;

use postgres::Client;

use super::ClusterError;
use crate::pg_connect::PgConnector;

pub struct Db {
    connector: PgConnector,
    client: Mutex<Option<Client>>,
}

impl Db {
    pub fn new(connector: PgConnector) -> Db {
        Db {
            connector,
            client: Mutex::new(None),
        }
    }

    pub fn connector(&self) -> &PgConnector {
        &self.connector
    }

    /// Runs `f` on the connection (opening it first when needed); a broken
    /// connection is dropped, so the next call opens a new one.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, ClusterError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(Client::is_closed) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.connector.connect("cluster")?);
        }
        let client = slot.as_mut().expect("connected above");
        let result = f(client);
        if client.is_closed() {
            *slot = None;
        }
        Ok(result?)
    }
}

impl Drop for Db {
    /// The synchronous client shuts its own runtime down when dropped, which
    /// panics on an async thread: drop it on a thread of its own.
    fn drop(&mut self) {
        let slot = self.client.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = slot.take() {
            let _ = std::thread::Builder::new()
                .name("regate-cluster-close".into())
                .spawn(move || drop(client));
        }
    }
}
