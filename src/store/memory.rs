//! An in-memory [`ObjectStore`] with the snapshot semantics of a RADOS pool
//! with self-managed snapshots, for fast tests of every layer above.
//!
//! An object keeps its head plus clones: a write carrying a snap context
//! with snap ids the object has not seen yet first preserves the current
//! head (or its absence) as a clone covering those ids, as the OSD does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::*;
use crate::format::tmap::{ApplyError, Tmap};

#[derive(Default, Clone)]
struct Object {
    head: Option<Vec<u8>>,
    /// Newest snap seq this object has been written under.
    seen_seq: u64,
    /// (newest snap id the clone serves, data then), oldest first.
    clones: Vec<(SnapId, Option<Vec<u8>>)>,
}

type Watchers = HashMap<u64, (String, Arc<WatchCallback>)>;

/// The gid the in-memory store reports as this client's.
pub const MEMORY_GID: u64 = 4242;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<HashMap<String, Object>>,
    next_snap: AtomicU64,
    watchers: Arc<Mutex<Watchers>>,
    next_watch: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Arc<MemoryStore> {
        Arc::new(MemoryStore {
            next_snap: AtomicU64::new(1),
            ..Default::default()
        })
    }

    /// Puts a whole object at the head, as `rados put` does.
    pub fn put(&self, oid: &str, data: &[u8]) {
        let mut objects = self.objects.lock();
        objects.entry(oid.to_string()).or_default().head = Some(data.to_vec());
    }

    pub fn object_names(&self) -> Vec<String> {
        let objects = self.objects.lock();
        let mut names: Vec<String> = objects
            .iter()
            .filter(|(_, o)| o.head.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    fn modify<T>(
        &self,
        oid: &str,
        snapc: &SnapContext,
        f: impl FnOnce(&mut Option<Vec<u8>>) -> T,
    ) -> T {
        let mut objects = self.objects.lock();
        let obj = objects.entry(oid.to_string()).or_default();
        if let Some(&newest) = snapc.snaps.first().filter(|&&n| n > obj.seen_seq) {
            obj.clones.push((newest, obj.head.clone()));
        }
        obj.seen_seq = obj.seen_seq.max(snapc.seq);
        f(&mut obj.head)
    }

    fn at_snap(&self, oid: &str, snap: SnapId, op: &'static str) -> StoreResult<Vec<u8>> {
        let objects = self.objects.lock();
        let obj = objects.get(oid);
        let data = obj.and_then(|o| {
            if snap == NOSNAP {
                return o.head.clone();
            }
            match o.clones.iter().find(|(upto, _)| *upto >= snap) {
                Some((_, d)) => d.clone(),
                None => o.head.clone(),
            }
        });
        data.ok_or_else(|| StoreError::NotFound {
            op,
            oid: oid.to_string(),
        })
    }
}

impl ObjectStore for MemoryStore {
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>> {
        let data = self.at_snap(oid, snap, "read")?;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()> {
        self.modify(oid, snapc, |head| {
            let buf = head.get_or_insert_with(Vec::new);
            let end = offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[offset as usize..end].copy_from_slice(data);
        });
        Ok(())
    }

    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64> {
        Ok(self.at_snap(oid, snap, "stat")?.len() as u64)
    }

    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()> {
        let existed = self.modify(oid, snapc, |head| head.take().is_some());
        if existed {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                op: "remove",
                oid: oid.to_string(),
            })
        }
    }

    fn truncate(&self, oid: &str, size: u64, snapc: &SnapContext) -> StoreResult<()> {
        let existed = self.modify(oid, snapc, |head| match head {
            Some(buf) => {
                buf.resize(size as usize, 0);
                true
            }
            None => false,
        });
        if existed {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                op: "truncate",
                oid: oid.to_string(),
            })
        }
    }

    fn zero(&self, oid: &str, offset: u64, len: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.modify(oid, snapc, |head| {
            if let Some(buf) = head {
                let start = (offset as usize).min(buf.len());
                let end = (offset.saturating_add(len) as usize).min(buf.len());
                buf[start..end].fill(0);
            }
        });
        Ok(())
    }

    fn usage(&self) -> StoreResult<Usage> {
        let objects = self.objects.lock();
        let pool_bytes = objects
            .values()
            .filter_map(|o| o.head.as_ref())
            .map(|h| h.len() as u64)
            .sum();
        Ok(Usage {
            total_bytes: 1 << 40,
            avail_bytes: (1u64 << 40).saturating_sub(pool_bytes),
            pool_bytes,
            pool_objects: objects.len() as u64,
        })
    }

    fn exec(&self, oid: &str, _class: &str, _method: &str, _input: &[u8]) -> StoreResult<Vec<u8>> {
        Err(StoreError::Errno {
            op: "exec",
            oid: oid.to_string(),
            errno: libc::EOPNOTSUPP,
        })
    }

    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()> {
        let current = self.at_snap(oid, NOSNAP, "tmap_update").unwrap_or_default();
        let mut map = Tmap::decode(&current).map_err(|_| tmap_error(oid, ApplyError::Invalid))?;
        map.apply(command).map_err(|e| tmap_error(oid, e))?;
        self.put(oid, &map.encode());
        Ok(())
    }

    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId> {
        Ok(self.next_snap.fetch_add(1, Ordering::SeqCst))
    }

    fn selfmanaged_snap_remove(&self, _snap: SnapId) -> StoreResult<()> {
        Ok(())
    }

    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>> {
        let id = self.next_watch.fetch_add(1, Ordering::SeqCst);
        self.watchers
            .lock()
            .insert(id, (oid.to_string(), Arc::new(callback)));
        Ok(Box::new(MemoryWatch {
            watchers: self.watchers.clone(),
            id,
        }))
    }

    fn notify(&self, oid: &str, payload: &[u8], _timeout_ms: u64) -> StoreResult<NotifyReplies> {
        let targets: Vec<(u64, Arc<WatchCallback>)> = self
            .watchers
            .lock()
            .iter()
            .filter(|(_, (o, _))| o == oid)
            .map(|(id, (_, cb))| (*id, cb.clone()))
            .collect();
        let mut replies = NotifyReplies::default();
        for (cookie, cb) in targets {
            let ack = cb(WatchEvent::Notify(payload));
            replies.acks.push((MEMORY_GID, cookie, ack));
        }
        Ok(replies)
    }

    fn instance_id(&self) -> u64 {
        MEMORY_GID
    }

    fn blocklist_add(&self, _address: &str, _expire_secs: u32) -> StoreResult<()> {
        Ok(())
    }

    fn pool_by_id(&self, pool_id: i64) -> StoreResult<Arc<dyn ObjectStore>> {
        Err(StoreError::Errno {
            op: "pool_by_id",
            oid: pool_id.to_string(),
            errno: libc::ENOENT,
        })
    }

    fn pool_id(&self) -> i64 {
        0
    }
}

struct MemoryWatch {
    watchers: Arc<Mutex<Watchers>>,
    id: u64,
}

impl WatchGuard for MemoryWatch {
    fn cookie(&self) -> u64 {
        self.id
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.watchers.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_preserve_old_data() {
        let s = MemoryStore::new();
        let none = SnapContext::default();
        s.write("o", 0, b"aaaa", &none).unwrap();
        let s1 = s.selfmanaged_snap_create().unwrap();
        let c1 = SnapContext {
            seq: s1,
            snaps: vec![s1],
        };
        s.write("o", 1, b"bb", &c1).unwrap();
        s.write("new", 0, b"x", &c1).unwrap();
        assert_eq!(s.read("o", 0, 10, NOSNAP).unwrap(), b"abba");
        assert_eq!(s.read("o", 0, 10, s1).unwrap(), b"aaaa");
        assert!(s.read("new", 0, 10, s1).unwrap_err().is_not_found());
        // A write with a stale (empty) context does not preserve anything.
        let s2 = s.selfmanaged_snap_create().unwrap();
        s.write("o", 0, b"z", &c1).unwrap();
        assert_eq!(s.read("o", 0, 10, s2).unwrap(), b"zbba");
    }
}
