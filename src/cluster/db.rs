//! One connection to PostgreSQL, opened on first use and again after it
//! broke. Blocking: call it from `spawn_blocking` or a thread of its own.

use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::ClusterError;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a connection for `config` with regate's name and bounded waits.
pub fn connect(config: &postgres::Config) -> Result<Client, ClusterError> {
    let mut config = config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("regate");
    }
    config.connect(NoTls).map_err(ClusterError::Connect)
}

pub struct Db {
    config: postgres::Config,
    client: Mutex<Option<Client>>,
}

impl Db {
    pub fn new(config: postgres::Config) -> Db {
        Db {
            config,
            client: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &postgres::Config {
        &self.config
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
            *slot = Some(connect(&self.config)?);
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
