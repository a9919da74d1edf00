//! A store that survives losing its RADOS client: when an operation fails
//! because the cluster blocklisted us (librados answers EBLOCKLISTED, which
//! is ESHUTDOWN), [`Reconnecting`] connects a new client (new instance id,
//! new address) and sends later operations through it.
//!
//! The operation that met the blocklist is not retried if it changes
//! anything: whether it reached the OSD is unknown, and what the old client
//! had acknowledged may be lost, so it fails with EIO (the cache reports
//! that to the next fsync/close). Reads are retried once on the new client.
//! Every store made from this one (`pool_by_id`: data pools, clone
//! parents) follows the same client.
//!
//! What lived on the old client does not move by itself: watches, and the
//! exclusive lock whose cookie names a watch. [`ObjectStore::generation`]
//! changes with each new client, so an image sees it and re-watches and
//! re-takes its lock as a new client would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::{Mutex, RwLock};

use super::*;

/// Makes a new client's store for the root pool.
pub type Connector = Box<dyn Fn() -> StoreResult<Arc<dyn ObjectStore>> + Send + Sync>;

/// The errno librados gives every operation of a blocklisted client.
pub const EBLOCKLISTED: i32 = libc::ESHUTDOWN;

/// Between two failed attempts to connect, operations fail at once.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Whether `e` says our client is gone for good (blocklisted or shut down).
pub fn is_client_lost(e: &StoreError) -> bool {
    e.errno() == EBLOCKLISTED
}

struct Shared {
    connect: Connector,
    /// (generation, the root pool's store on that generation's client).
    current: RwLock<(u64, Arc<dyn ObjectStore>)>,
    /// One reconnection at a time; when the last attempt failed.
    reconnecting: Mutex<Option<Instant>>,
}

impl Shared {
    /// The client of generation `seen` is lost: connect a new one unless
    /// someone already did. Logs the trouble once, and its end.
    fn reconnect(&self, seen: u64, cause: &StoreError) {
        let mut last_failure = self.reconnecting.lock();
        if self.current.read().0 != seen {
            return; // done by another thread meanwhile
        }
        if last_failure.is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF) {
            return;
        }
        if last_failure.is_none() {
            let old = self.current.read().1.clone();
            error!(
                "RADOS client {} ({}) lost: {cause} (blocklisted?); writes it had not \
                 finished are lost and reported to the next fsync/close as EIO; \
                 reconnecting with a new client",
                old.instance_id(),
                old.client_address()
            );
        }
        match (self.connect)() {
            Ok(store) => {
                let (id, addr) = (store.instance_id(), store.client_address());
                let mut cur = self.current.write();
                cur.0 += 1;
                cur.1 = store;
                *last_failure = None;
                info!(
                    "reconnected to the cluster as client {id} ({addr}); serving every image again"
                );
            }
            Err(e) => {
                if last_failure.is_none() {
                    warn!("reconnecting to the cluster failed: {e}; retrying");
                }
                *last_failure = Some(Instant::now());
            }
        }
    }
}

pub struct Reconnecting {
    shared: Arc<Shared>,
    /// None: the root pool; Some: a pool of the cluster (by id) in a
    /// namespace, derived from the root on each new client.
    pool: Option<(i64, String)>,
    pool_id: i64,
    namespace: String,
    /// This pool's store on the client of that generation.
    inner: RwLock<(u64, Arc<dyn ObjectStore>)>,
}

impl Reconnecting {
    /// Connects (through `connect`) and serves the root pool.
    pub fn new(connect: Connector) -> StoreResult<Reconnecting> {
        let store = connect()?;
        Ok(Self::with_store(store, connect))
    }

    /// Serves the root pool through `store`, already connected; `connect`
    /// makes the next client's.
    pub fn with_store(store: Arc<dyn ObjectStore>, connect: Connector) -> Reconnecting {
        let pool_id = store.pool_id();
        let namespace = store.namespace();
        Reconnecting {
            shared: Arc::new(Shared {
                connect,
                current: RwLock::new((0, store.clone())),
                reconnecting: Mutex::new(None),
            }),
            pool: None,
            pool_id,
            namespace,
            inner: RwLock::new((0, store)),
        }
    }

    /// This pool's store on the current client.
    fn current(&self) -> StoreResult<(u64, Arc<dyn ObjectStore>)> {
        let (generation, root) = self.shared.current.read().clone();
        {
            let inner = self.inner.read();
            if inner.0 == generation {
                return Ok(inner.clone());
            }
        }
        let store = match &self.pool {
            None => root,
            Some((id, ns)) => root.pool_in_namespace(*id, ns)?,
        };
        *self.inner.write() = (generation, store.clone());
        Ok((generation, store))
    }

    /// Runs `op` on the current client; if the client is lost, reconnects,
    /// and retries once when `retry` (reads). A lost client's error
    /// becomes EIO.
    fn run<T>(
        &self,
        retry: bool,
        op: impl Fn(&dyn ObjectStore) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let (generation, store) = self.current()?;
        match op(&*store) {
            Err(e) if is_client_lost(&e) => {
                drop(store);
                self.shared.reconnect(generation, &e);
                if retry
                    && let Ok((g, store)) = self.current()
                    && g != generation
                {
                    return op(&*store).map_err(lost_is_eio);
                }
                Err(lost_is_eio(e))
            }
            result => result,
        }
    }
}

/// Object-class methods that only read (header and directory queries,
/// lock info, object map load): safe to send again on a new client.
fn exec_only_reads(method: &str) -> bool {
    method.starts_with("get")
        || method.contains("_get")
        || method.contains("list")
        || method == "object_map_load"
}

/// What a lost client's caller hears: the outcome is unknown, EIO.
fn lost_is_eio(e: StoreError) -> StoreError {
    match e {
        StoreError::Errno { op, oid, errno } if errno == EBLOCKLISTED => StoreError::Errno {
            op,
            oid,
            errno: libc::EIO,
        },
        e => e,
    }
}

impl ObjectStore for Reconnecting {
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>> {
        self.run(true, |s| s.read(oid, offset, len, snap))
    }

    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()> {
        self.run(false, |s| s.write(oid, offset, data, snapc))
    }

    fn write_extents(
        &self,
        oid: &str,
        extents: &[(u64, &[u8])],
        snapc: &SnapContext,
    ) -> StoreResult<()> {
        self.run(false, |s| s.write_extents(oid, extents, snapc))
    }

    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64> {
        self.run(true, |s| s.stat(oid, snap))
    }

    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()> {
        self.run(false, |s| s.remove(oid, snapc))
    }

    fn truncate(&self, oid: &str, size: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.run(false, |s| s.truncate(oid, size, snapc))
    }

    fn zero(&self, oid: &str, offset: u64, len: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.run(false, |s| s.zero(oid, offset, len, snapc))
    }

    fn usage(&self) -> StoreResult<Usage> {
        self.run(true, |s| s.usage())
    }

    fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> StoreResult<Vec<u8>> {
        // Methods that write (lock, snapshot_add) are never retried.
        self.run(exec_only_reads(method), |s| {
            s.exec(oid, class, method, input)
        })
    }

    fn read_full(&self, oid: &str) -> StoreResult<Vec<u8>> {
        self.run(true, |s| s.read_full(oid))
    }

    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()> {
        self.run(false, |s| s.tmap_update(oid, command))
    }

    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId> {
        self.run(false, |s| s.selfmanaged_snap_create())
    }

    fn selfmanaged_snap_remove(&self, snap: SnapId) -> StoreResult<()> {
        self.run(false, |s| s.selfmanaged_snap_remove(snap))
    }

    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>> {
        let (generation, store) = self.current()?;
        store.watch(oid, callback).map_err(|e| {
            if is_client_lost(&e) {
                self.shared.reconnect(generation, &e);
            }
            lost_is_eio(e)
        })
    }

    fn notify(&self, oid: &str, payload: &[u8], timeout_ms: u64) -> StoreResult<NotifyReplies> {
        self.run(false, |s| s.notify(oid, payload, timeout_ms))
    }

    fn instance_id(&self) -> u64 {
        self.shared.current.read().1.instance_id()
    }

    fn client_address(&self) -> String {
        self.shared.current.read().1.client_address()
    }

    fn blocklist_add(&self, address: &str, expire_secs: u32) -> StoreResult<()> {
        self.run(false, |s| s.blocklist_add(address, expire_secs))
    }

    fn pool_by_id(&self, pool_id: i64) -> StoreResult<Arc<dyn ObjectStore>> {
        // The same namespace, as librbd keeps an image's in its data pool.
        self.pool_in_namespace(pool_id, &self.namespace)
    }

    fn pool_in_namespace(
        &self,
        pool_id: i64,
        namespace: &str,
    ) -> StoreResult<Arc<dyn ObjectStore>> {
        let (generation, root) = self.shared.current.read().clone();
        let store = root.pool_in_namespace(pool_id, namespace)?;
        Ok(Arc::new(Reconnecting {
            shared: self.shared.clone(),
            pool: Some((pool_id, namespace.to_string())),
            pool_id,
            namespace: namespace.to_string(),
            inner: RwLock::new((generation, store)),
        }))
    }

    fn pool_by_name(&self, name: &str, namespace: &str) -> StoreResult<Arc<dyn ObjectStore>> {
        let (_, root) = self.shared.current.read().clone();
        let id = root.pool_by_name(name, namespace)?.pool_id();
        self.pool_in_namespace(id, namespace)
    }

    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    fn pool_name(&self) -> String {
        match self.current() {
            Ok((_, store)) => store.pool_name(),
            Err(_) => self.pool_id.to_string(),
        }
    }

    fn list_pools(&self) -> StoreResult<Vec<PoolEntry>> {
        self.run(true, |s| s.list_pools())
    }

    fn snap_rollback(&self, oid: &str, snap: SnapId, snapc: &SnapContext) -> StoreResult<()> {
        self.run(false, |s| s.snap_rollback(oid, snap, snapc))
    }

    fn config_value(&self, key: &str) -> Option<String> {
        self.shared.current.read().1.config_value(key)
    }

    fn min_compat_client(&self) -> StoreResult<i8> {
        self.run(true, |s| s.min_compat_client())
    }

    fn pool_id(&self) -> i64 {
        self.pool_id
    }

    fn generation(&self) -> u64 {
        self.shared.current.read().0
    }
}
