//! An in-memory RADOS cluster for tests of every layer above the store:
//! pools of objects with the snapshot semantics of self-managed snapshots,
//! omap and xattrs, the `rbd` and `lock` object classes (see
//! [`cls_rbd`] and [`cls_lock`]),
//! several clients with watch/notify between them, and the blocklist.
//!
//! An object keeps its head plus clones: a write carrying a snap context
//! with snap ids the object has not seen yet first preserves the current
//! head (or its absence) as a clone covering those ids, as the OSD does.
//!
//! [`MemoryCluster::new`] makes a cluster with pool 0 (`rbd`);
//! [`MemoryCluster::client`] a new client of it (its own instance id and
//! address), as a [`MemoryStore`] on pool 0. [`MemoryStore::new`] is a
//! one-client cluster.

mod cls;
pub mod cls_lock;
pub mod cls_rbd;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::format::tmap::{ApplyError, Tmap};
use crate::format::v2::{ADDR_TYPE_LEGACY, EntityAddr};

#[derive(Default, Clone)]
struct Object {
    head: Option<Vec<u8>>,
    /// Newest snap seq this object has been written under.
    seen_seq: u64,
    /// (newest snap id the clone serves, data then), oldest first.
    clones: Vec<(SnapId, Option<Vec<u8>>)>,
    /// The head's omap and xattrs (object classes keep their state there).
    omap: BTreeMap<String, Vec<u8>>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// The gid of the client [`MemoryStore::new`] makes (the first client of a
/// cluster).
pub const MEMORY_GID: u64 = 4242;

/// errno librados gives a blocklisted client (EBLOCKLISTED = ESHUTDOWN).
pub const EBLOCKLISTED: i32 = libc::ESHUTDOWN;

/// The objects of one (pool, RADOS namespace).
struct PoolState {
    id: i64,
    namespace: String,
    objects: Mutex<HashMap<String, Object>>,
}

impl PoolState {
    fn new(id: i64, namespace: &str) -> Arc<PoolState> {
        Arc::new(PoolState {
            id,
            namespace: namespace.to_string(),
            objects: Mutex::new(HashMap::new()),
        })
    }
}

struct Watcher {
    gid: u64,
    oid: String,
    pool: i64,
    namespace: String,
    callback: Arc<WatchCallback>,
}

/// One client: its identity and whether it still answers notifications.
struct ClientState {
    gid: u64,
    addr: EntityAddr,
    /// Set by tests: notifications to its watches go unanswered (a client
    /// that hangs or died without unwatching).
    watches_paused: AtomicBool,
}

impl ClientState {
    fn address(&self) -> String {
        self.addr.legacy_str()
    }
}

/// The shared state of an in-memory cluster: pools, watches, blocklist.
pub struct MemoryCluster {
    /// The default namespace of each pool.
    pools: Mutex<BTreeMap<i64, Arc<PoolState>>>,
    /// Other namespaces, made on first use (RADOS namespaces need no
    /// creation).
    namespaced: Mutex<HashMap<(i64, String), Arc<PoolState>>>,
    /// Each pool's name and enabled applications.
    pool_meta: Mutex<BTreeMap<i64, (String, Vec<String>)>>,
    /// Self-managed snap ids; one counter for the cluster is enough.
    next_snap: AtomicU64,
    watchers: Arc<Mutex<HashMap<u64, Watcher>>>,
    next_watch: AtomicU64,
    next_gid: AtomicU64,
    blocklist: Mutex<HashSet<String>>,
    clients: Mutex<HashMap<u64, Arc<ClientState>>>,
    /// Client configuration values every client sees (`config_value`).
    config: Mutex<HashMap<String, String>>,
    /// What `min_compat_client` answers (default: Pacific, 16).
    min_compat: std::sync::atomic::AtomicI8,
}

impl MemoryCluster {
    /// A cluster with one pool, id 0.
    pub fn new() -> Arc<MemoryCluster> {
        let cluster = Arc::new(MemoryCluster {
            pools: Mutex::new(BTreeMap::new()),
            namespaced: Mutex::new(HashMap::new()),
            pool_meta: Mutex::new(BTreeMap::new()),
            next_snap: AtomicU64::new(1),
            watchers: Arc::new(Mutex::new(HashMap::new())),
            next_watch: AtomicU64::new(1),
            next_gid: AtomicU64::new(MEMORY_GID),
            blocklist: Mutex::new(HashSet::new()),
            clients: Mutex::new(HashMap::new()),
            config: Mutex::new(HashMap::new()),
            min_compat: std::sync::atomic::AtomicI8::new(16),
        });
        cluster.create_named_pool("rbd", &["rbd"]);
        cluster
    }

    /// Sets a configuration value every client sees.
    pub fn set_config(&self, key: &str, value: &str) {
        self.config
            .lock()
            .insert(key.to_string(), value.to_string());
    }

    /// Sets the cluster's (required) minimum compatible client release.
    pub fn set_min_compat_client(&self, release: i8) {
        self.min_compat.store(release, Ordering::SeqCst);
    }

    /// Adds a pool; returns its id (0, 1, 2, ...).
    /// Adds a pool (named `poolID`, application `rbd`); returns its id (0,
    /// 1, 2, ...).
    pub fn create_pool(&self) -> i64 {
        let id = self.pools.lock().keys().next_back().map_or(0, |&k| k + 1);
        self.create_named_pool(&format!("pool{id}"), &["rbd"])
    }

    /// Adds pool `name` with these applications enabled; returns its id.
    pub fn create_named_pool(&self, name: &str, applications: &[&str]) -> i64 {
        let mut pools = self.pools.lock();
        let id = pools.keys().next_back().map_or(0, |&k| k + 1);
        pools.insert(id, PoolState::new(id, ""));
        let apps = applications.iter().map(|a| a.to_string()).collect();
        self.pool_meta.lock().insert(id, (name.to_string(), apps));
        id
    }

    /// Deletes a pool: it is no longer listed or opened by id or name
    /// (handles already made keep their objects, unlike RADOS).
    pub fn delete_pool(&self, id: i64) {
        self.pools.lock().remove(&id);
        self.pool_meta.lock().remove(&id);
        self.namespaced.lock().retain(|(p, _), _| *p != id);
    }

    /// The objects of (pool, namespace), if the pool exists.
    fn pool_state(&self, id: i64, namespace: &str) -> Option<Arc<PoolState>> {
        let default = self.pools.lock().get(&id).cloned()?;
        if namespace.is_empty() {
            return Some(default);
        }
        let mut ns = self.namespaced.lock();
        Some(
            ns.entry((id, namespace.to_string()))
                .or_insert_with(|| PoolState::new(id, namespace))
                .clone(),
        )
    }

    /// A new client (its own instance id and address) on pool 0.
    pub fn client(self: &Arc<Self>) -> Arc<MemoryStore> {
        let gid = self.next_gid.fetch_add(1, Ordering::SeqCst);
        let client = Arc::new(ClientState {
            gid,
            addr: EntityAddr {
                addr_type: ADDR_TYPE_LEGACY,
                nonce: gid as u32,
                ip: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            },
            watches_paused: AtomicBool::new(false),
        });
        self.clients.lock().insert(gid, client.clone());
        let pool = self.pools.lock().get(&0).cloned();
        Arc::new(MemoryStore {
            cluster: self.clone(),
            client,
            pool: pool.unwrap_or_else(|| PoolState::new(0, "")),
        })
    }

    /// The gids of the clients with this address.
    fn clients_at(&self, address: &str) -> Vec<u64> {
        self.clients
            .lock()
            .values()
            .filter(|c| c.address() == address)
            .map(|c| c.gid)
            .collect()
    }

    fn is_blocklisted(&self, client: &ClientState) -> bool {
        let list = self.blocklist.lock();
        !list.is_empty() && list.contains(&client.address())
    }
}

/// One client's handle on one pool of a [`MemoryCluster`].
pub struct MemoryStore {
    cluster: Arc<MemoryCluster>,
    client: Arc<ClientState>,
    pool: Arc<PoolState>,
}

impl MemoryStore {
    /// A one-client cluster; the store is that client on pool 0.
    pub fn new() -> Arc<MemoryStore> {
        MemoryCluster::new().client()
    }

    pub fn cluster(&self) -> &Arc<MemoryCluster> {
        &self.cluster
    }

    /// Puts a whole object at the head, as `rados put` does.
    pub fn put(&self, oid: &str, data: &[u8]) {
        let mut objects = self.pool.objects.lock();
        objects.entry(oid.to_string()).or_default().head = Some(data.to_vec());
    }

    pub fn object_names(&self) -> Vec<String> {
        let objects = self.pool.objects.lock();
        let mut names: Vec<String> = objects
            .iter()
            .filter(|(_, o)| o.head.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// The omap of `oid` at the head (empty when it has none).
    pub fn omap(&self, oid: &str) -> BTreeMap<String, Vec<u8>> {
        let objects = self.pool.objects.lock();
        objects.get(oid).map(|o| o.omap.clone()).unwrap_or_default()
    }

    /// While paused, notifications to this client's watches go unanswered
    /// (the notifier sees them time out), as for a hung client.
    pub fn set_watches_paused(&self, paused: bool) {
        self.client.watches_paused.store(paused, Ordering::SeqCst);
    }

    /// Fails with EBLOCKLISTED once this client is blocklisted, as every
    /// librados operation of a blocklisted client does.
    fn alive(&self, op: &'static str, oid: &str) -> StoreResult<()> {
        if self.cluster.is_blocklisted(&self.client) {
            return Err(StoreError::Errno {
                op,
                oid: oid.to_string(),
                errno: EBLOCKLISTED,
            });
        }
        Ok(())
    }

    fn modify<T>(&self, oid: &str, snapc: &SnapContext, f: impl FnOnce(&mut Object) -> T) -> T {
        let mut objects = self.pool.objects.lock();
        let obj = objects.entry(oid.to_string()).or_default();
        preserve_for_snapshots(obj, snapc);
        f(obj)
    }

    fn at_snap(&self, oid: &str, snap: SnapId, op: &'static str) -> StoreResult<Vec<u8>> {
        let objects = self.pool.objects.lock();
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

/// The OSD's clone-on-write: a snap context newer than what the object
/// saw keeps the current head for the snapshots in between.
fn preserve_for_snapshots(obj: &mut Object, snapc: &SnapContext) {
    if let Some(&newest) = snapc.snaps.first().filter(|&&n| n > obj.seen_seq) {
        obj.clones.push((newest, obj.head.clone()));
    }
    obj.seen_seq = obj.seen_seq.max(snapc.seq);
}

fn write_at(buf: &mut Vec<u8>, offset: u64, data: &[u8]) -> bool {
    let Some(end) = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(data.len()))
    else {
        return false;
    };
    if end > MAX_MEMORY_OBJECT {
        return false;
    }
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[end - data.len()..end].copy_from_slice(data);
    true
}

/// Largest object the in-memory store holds (RADOS' default
/// osd_max_object_size is 128 MiB).
const MAX_MEMORY_OBJECT: usize = 128 << 20;

impl ObjectStore for MemoryStore {
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>> {
        self.alive("read", oid)?;
        let data = self.at_snap(oid, snap, "read")?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()> {
        self.alive("write", oid)?;
        let ok = self.modify(oid, snapc, |obj| {
            write_at(obj.head.get_or_insert_with(Vec::new), offset, data)
        });
        if ok {
            Ok(())
        } else {
            Err(StoreError::Errno {
                op: "write",
                oid: oid.to_string(),
                errno: libc::EFBIG,
            })
        }
    }

    fn write_extents(
        &self,
        oid: &str,
        extents: &[(u64, &[u8])],
        snapc: &SnapContext,
    ) -> StoreResult<()> {
        self.alive("write", oid)?;
        // One transaction, as a rados_write_op.
        let ok = self.modify(oid, snapc, |obj| {
            let mut buf = obj.head.clone().unwrap_or_default();
            let ok = extents
                .iter()
                .all(|&(offset, data)| write_at(&mut buf, offset, data));
            if ok {
                obj.head = Some(buf);
            }
            ok
        });
        if ok {
            Ok(())
        } else {
            Err(StoreError::Errno {
                op: "write",
                oid: oid.to_string(),
                errno: libc::EFBIG,
            })
        }
    }

    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64> {
        self.alive("stat", oid)?;
        Ok(self.at_snap(oid, snap, "stat")?.len() as u64)
    }

    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()> {
        self.alive("remove", oid)?;
        let existed = self.modify(oid, snapc, |obj| {
            obj.omap.clear();
            obj.xattrs.clear();
            obj.head.take().is_some()
        });
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
        self.alive("truncate", oid)?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_MEMORY_OBJECT)
            .ok_or_else(|| StoreError::Errno {
                op: "truncate",
                oid: oid.to_string(),
                errno: libc::EFBIG,
            })?;
        let existed = self.modify(oid, snapc, |obj| match &mut obj.head {
            Some(buf) => {
                buf.resize(size, 0);
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
        self.alive("zero", oid)?;
        self.modify(oid, snapc, |obj| {
            if let Some(buf) = &mut obj.head {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(buf.len());
                let end = usize::try_from(offset.saturating_add(len))
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                if start < end {
                    buf[start..end].fill(0);
                }
            }
        });
        Ok(())
    }

    fn usage(&self) -> StoreResult<Usage> {
        self.alive("usage", "")?;
        let objects = self.pool.objects.lock();
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

    /// Runs the class method on a copy of the object and keeps the result
    /// only if the method succeeds: one transaction, as on the OSD.
    fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> StoreResult<Vec<u8>> {
        self.alive("exec", oid)?;
        let caller = cls::Caller {
            gid: self.client.gid,
            addr: self.client.addr,
            now: cls::now(),
        };
        let mut objects = self.pool.objects.lock();
        let current = objects.get(oid);
        let mut obj = cls::ClsObject {
            data: current.and_then(|o| o.head.clone()),
            omap: current.map(|o| o.omap.clone()).unwrap_or_default(),
            xattrs: current.map(|o| o.xattrs.clone()).unwrap_or_default(),
            changed: false,
        };
        let reply = cls::call(class, method, &mut obj, &caller, input)
            .map_err(|errno| StoreError::from_rc("exec", oid, -errno))?;
        if obj.changed {
            let entry = objects.entry(oid.to_string()).or_default();
            preserve_for_snapshots(entry, &SnapContext::default());
            let exists = obj.data.is_some();
            entry.head = obj.data;
            entry.omap = if exists { obj.omap } else { BTreeMap::new() };
            entry.xattrs = if exists { obj.xattrs } else { BTreeMap::new() };
        }
        Ok(reply)
    }

    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()> {
        self.alive("tmap_update", oid)?;
        let mut objects = self.pool.objects.lock();
        let current = objects
            .get(oid)
            .and_then(|o| o.head.clone())
            .unwrap_or_default();
        let mut map = Tmap::decode(&current).map_err(|_| tmap_error(oid, ApplyError::Invalid))?;
        map.apply(command).map_err(|e| tmap_error(oid, e))?;
        objects.entry(oid.to_string()).or_default().head = Some(map.encode());
        Ok(())
    }

    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId> {
        self.alive("selfmanaged_snap_create", "")?;
        Ok(self.cluster.next_snap.fetch_add(1, Ordering::SeqCst))
    }

    fn selfmanaged_snap_remove(&self, _snap: SnapId) -> StoreResult<()> {
        self.alive("selfmanaged_snap_remove", "")?;
        Ok(())
    }

    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>> {
        self.alive("watch", oid)?;
        let id = self.cluster.next_watch.fetch_add(1, Ordering::SeqCst);
        self.cluster.watchers.lock().insert(
            id,
            Watcher {
                gid: self.client.gid,
                oid: oid.to_string(),
                pool: self.pool.id,
                namespace: self.pool.namespace.clone(),
                callback: Arc::new(callback),
            },
        );
        Ok(Box::new(MemoryWatch {
            watchers: self.cluster.watchers.clone(),
            id,
        }))
    }

    /// Delivers the notification to every watcher of `oid` in this pool
    /// (every client's), each on its own thread, and collects the acks
    /// that come within `timeout_ms`; the rest are timeouts, as
    /// `rados_notify2` reports them.
    fn notify(&self, oid: &str, payload: &[u8], timeout_ms: u64) -> StoreResult<NotifyReplies> {
        self.alive("notify", oid)?;
        let targets: Vec<(u64, u64, Arc<WatchCallback>)> = self
            .cluster
            .watchers
            .lock()
            .iter()
            .filter(|(_, w)| {
                w.oid == oid && w.pool == self.pool.id && w.namespace == self.pool.namespace
            })
            .map(|(id, w)| (w.gid, *id, w.callback.clone()))
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pending = Vec::new();
        for (gid, cookie, cb) in targets {
            pending.push((gid, cookie));
            if self.watcher_paused(gid) {
                continue;
            }
            let tx = tx.clone();
            let payload = payload.to_vec();
            std::thread::spawn(move || {
                let ack = cb(WatchEvent::Notify(&payload));
                let _ = tx.send((gid, cookie, ack));
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut replies = NotifyReplies::default();
        while replies.acks.len() < pending.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(ack) => replies.acks.push(ack),
                Err(RecvTimeoutError::Timeout) => break,
                // Only hung (paused) watchers are left: they never answer,
                // so the notifier waits out its timeout, as with RADOS.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    break;
                }
            }
        }
        for (gid, cookie) in pending {
            if !replies.acks.iter().any(|a| a.0 == gid && a.1 == cookie) {
                replies.timeouts.push((gid, cookie));
            }
        }
        Ok(replies)
    }

    fn instance_id(&self) -> u64 {
        self.client.gid
    }

    fn client_address(&self) -> String {
        self.client.address()
    }

    /// Blocklists `address`: that client's operations fail with
    /// EBLOCKLISTED from now on, and its watches break (ENOTCONN).
    fn blocklist_add(&self, address: &str, _expire_secs: u32) -> StoreResult<()> {
        self.alive("blocklist_add", address)?;
        self.cluster.blocklist.lock().insert(address.to_string());
        let gids = self.cluster.clients_at(address);
        let broken: Vec<Arc<WatchCallback>> = {
            let mut watchers = self.cluster.watchers.lock();
            let ids: Vec<u64> = watchers
                .iter()
                .filter(|(_, w)| gids.contains(&w.gid))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| watchers.remove(&id))
                .map(|w| w.callback)
                .collect()
        };
        for cb in broken {
            std::thread::spawn(move || {
                cb(WatchEvent::Error(libc::ENOTCONN));
            });
        }
        Ok(())
    }

    fn pool_by_id(&self, pool_id: i64) -> StoreResult<Arc<dyn ObjectStore>> {
        self.pool_in_namespace(pool_id, &self.pool.namespace)
    }

    fn pool_id(&self) -> i64 {
        self.pool.id
    }

    fn namespace(&self) -> String {
        self.pool.namespace.clone()
    }

    fn pool_name(&self) -> String {
        let meta = self.cluster.pool_meta.lock();
        meta.get(&self.pool.id)
            .map_or_else(|| self.pool.id.to_string(), |m| m.0.clone())
    }

    fn list_pools(&self) -> StoreResult<Vec<PoolEntry>> {
        self.alive("list_pools", "")?;
        let meta = self.cluster.pool_meta.lock();
        Ok(meta
            .iter()
            .map(|(&id, (name, apps))| PoolEntry {
                id,
                name: name.clone(),
                applications: apps.clone(),
            })
            .collect())
    }

    fn pool_by_name(&self, name: &str, namespace: &str) -> StoreResult<Arc<dyn ObjectStore>> {
        let id = self
            .cluster
            .pool_meta
            .lock()
            .iter()
            .find(|(_, m)| m.0 == name)
            .map(|(&id, _)| id);
        match id {
            Some(id) => self.pool_in_namespace(id, namespace),
            None => Err(StoreError::NotFound {
                op: "pool_by_name",
                oid: name.to_string(),
            }),
        }
    }

    fn pool_in_namespace(
        &self,
        pool_id: i64,
        namespace: &str,
    ) -> StoreResult<Arc<dyn ObjectStore>> {
        self.alive("pool_by_id", "")?;
        let pool = self.cluster.pool_state(pool_id, namespace);
        match pool {
            Some(pool) => Ok(Arc::new(MemoryStore {
                cluster: self.cluster.clone(),
                client: self.client.clone(),
                pool,
            })),
            None => Err(StoreError::NotFound {
                op: "pool_by_id",
                oid: pool_id.to_string(),
            }),
        }
    }

    fn snap_rollback(&self, oid: &str, snap: SnapId, snapc: &SnapContext) -> StoreResult<()> {
        self.alive("snap_rollback", oid)?;
        let then = match self.at_snap(oid, snap, "snap_rollback") {
            Ok(d) => Some(d),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        self.modify(oid, snapc, |obj| {
            if then.is_none() {
                obj.omap.clear();
                obj.xattrs.clear();
            }
            obj.head = then;
        });
        Ok(())
    }

    fn config_value(&self, key: &str) -> Option<String> {
        self.cluster.config.lock().get(key).cloned()
    }

    fn min_compat_client(&self) -> StoreResult<i8> {
        self.alive("get_min_compatible_client", "")?;
        Ok(self.cluster.min_compat.load(Ordering::SeqCst))
    }
}

impl MemoryStore {
    fn watcher_paused(&self, gid: u64) -> bool {
        self.cluster
            .clients
            .lock()
            .get(&gid)
            .is_some_and(|c| c.watches_paused.load(Ordering::SeqCst))
    }
}

struct MemoryWatch {
    watchers: Arc<Mutex<HashMap<u64, Watcher>>>,
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
mod tests;
