//! Per repository-and-tag locks. A tag delete holds the write side for its
//! whole sequence, and so does a manifest PUT to the tag; manifest GET and
//! HEAD of that tag hold the read side until the registry has answered. So no
//! client ever sees the dummy, no push interleaves with a delete, and no read
//! meets the registry's non-atomic rewrite of a tag link. Different tags never
//! wait for each other. A guard can keep another lock of the same tag alive
//! as long as itself ([`TagGuard::hold_also`]: the tag's lock on the other
//! replicas of a cluster).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type Key = (String, String);

#[derive(Default)]
pub struct TagLocks {
    map: Arc<Mutex<HashMap<Key, Arc<RwLock<()>>>>>,
}

/// Guards are held only for their `Drop`.
#[allow(dead_code)]
enum Held {
    Read(OwnedRwLockReadGuard<()>),
    Write(OwnedRwLockWriteGuard<()>),
}

/// Holds a tag lock; the map entry goes when its last holder does.
pub struct TagGuard {
    held: Option<Held>,
    key: Key,
    map: Arc<Mutex<HashMap<Key, Arc<RwLock<()>>>>>,
    /// Held as long as this guard, released just after it (in a cluster:
    /// the same tag's lock on every replica).
    also: Option<Box<dyn Send + Sync>>,
}

impl TagLocks {
    fn entry(&self, repo: &str, tag: &str) -> (Key, Arc<RwLock<()>>) {
        let key = (repo.to_owned(), tag.to_owned());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let lock = Arc::clone(map.entry(key.clone()).or_default());
        (key, lock)
    }

    pub async fn read(&self, repo: &str, tag: &str) -> TagGuard {
        let (key, lock) = self.entry(repo, tag);
        let held = Held::Read(lock.read_owned().await);
        TagGuard {
            held: Some(held),
            key,
            map: Arc::clone(&self.map),
            also: None,
        }
    }

    pub async fn write(&self, repo: &str, tag: &str) -> TagGuard {
        let (key, lock) = self.entry(repo, tag);
        let held = Held::Write(lock.write_owned().await);
        TagGuard {
            held: Some(held),
            key,
            map: Arc::clone(&self.map),
            also: None,
        }
    }

    /// The repository-wide side: a delete by digest makes 2.8 read every
    /// tag link of the repository (to untag them), and a link being rewritten
    /// meanwhile fails that scan after the manifest is already gone, leaving a
    /// dangling tag. So tag writes hold this shared, digest deletes exclusive.
    /// Always taken after a tag lock, never before.
    pub async fn repo_shared(&self, repo: &str) -> TagGuard {
        self.read(repo, "").await
    }

    pub async fn repo_exclusive(&self, repo: &str) -> TagGuard {
        self.write(repo, "").await
    }

    /// Number of tags with a lock entry (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TagGuard {
    /// Keeps `other` (another guard of the same tag) as long as this one.
    pub fn hold_also(&mut self, other: impl Send + Sync + 'static) {
        self.also = Some(Box::new(other));
    }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.get(&self.key) {
            // Only the map holds it: nobody waits or holds it any more.
            if Arc::strong_count(lock) == 1 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn readers_wait_for_a_writer_and_entries_are_cleaned() {
        let locks = Arc::new(TagLocks::default());
        let w = locks.write("r", "t").await;
        let l2 = Arc::clone(&locks);
        let reader = tokio::spawn(async move { l2.read("r", "t").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "a reader must wait for the delete");
        // Another tag is not blocked.
        drop(
            tokio::time::timeout(Duration::from_millis(50), locks.read("r", "other"))
                .await
                .unwrap(),
        );
        drop(w);
        let r = reader.await.unwrap();
        drop(r);
        assert!(locks.is_empty());
    }
}
