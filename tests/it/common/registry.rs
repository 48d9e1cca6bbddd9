//! A real distribution registry (`docker-registry serve`) on 127.0.0.1.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The storage of every registry this process runs, by URL: how the regate
/// fixture finds the storage root for fast reads (`REGATE_TEST_FAST_READS`).
static STORAGES: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// The storage root of the registry at `url`, if this process started it.
pub fn storage_of(url: &str) -> Option<PathBuf> {
    STORAGES.lock().unwrap().as_ref()?.get(url).cloned()
}

pub struct Registry {
    pub url: String,
    pub port: u16,
    pub config: PathBuf,
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy)]
pub struct RegistryOptions {
    pub delete_enabled: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            delete_enabled: true,
        }
    }
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Self {
        Self::start_on(opts, None)
    }

    /// A second registry over `other`'s storage (same `http.secret`), as
    /// the replicas of a cluster have it.
    pub fn start_sharing_storage_of(other: &Registry) -> Self {
        Self::start_on(RegistryOptions::default(), Some(other.storage.clone()))
    }

    fn start_on(opts: RegistryOptions, shared_storage: Option<PathBuf>) -> Self {
        super::require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = shared_storage.unwrap_or_else(|| dir.path().join("storage"));
        std::fs::create_dir_all(&storage).unwrap();
        let config = dir.path().join("registry.yml");
        // The registry binds the port itself, so a port can be taken between
        // choosing and binding it: retry with another one if it does not come up.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage:?}\n  delete:\n    enabled: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\n",
                    opts.delete_enabled,
                    storage = storage.display().to_string()
                ),
            )
            .unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docker-registry");
            let url = format!("http://127.0.0.1:{port}");
            if wait_up(&url, &mut child) {
                STORAGES
                    .lock()
                    .unwrap()
                    .get_or_insert_with(HashMap::new)
                    .insert(url.clone(), storage.clone());
                return Registry {
                    url,
                    port,
                    config,
                    storage,
                    child,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }
}

fn wait_up(url: &str, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = format!("{url}/v2/");
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(out) = Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", &probe])
            .output()
        {
            if out.status.success() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(m) = STORAGES.lock().unwrap().as_mut() {
            m.remove(&self.url);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
