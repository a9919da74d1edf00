//! The object store under everything: a small trait over the RADOS calls
//! rbdfs needs, with a librados implementation and an in-memory one that
//! tests use as a double.

pub mod failing;
pub mod memory;
pub mod rados;
pub mod reconnecting;

use thiserror::Error;

/// Snapshot ids and contexts belong to `format` (it decodes them); they
/// are re-exported here because every store call takes one.
pub use crate::format::snap::{NOSNAP, SnapContext, SnapId};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{op} {oid}: no such object")]
    NotFound { op: &'static str, oid: String },
    #[error("{op} {oid}: {}", errno_text(*.errno))]
    Errno {
        op: &'static str,
        oid: String,
        errno: i32,
    },
}

pub fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl StoreError {
    /// Builds the error for a negative librados return code.
    pub fn from_rc(op: &'static str, oid: &str, rc: i32) -> StoreError {
        let errno = -rc;
        if errno == libc::ENOENT {
            StoreError::NotFound {
                op,
                oid: oid.to_string(),
            }
        } else {
            StoreError::Errno {
                op,
                oid: oid.to_string(),
                errno,
            }
        }
    }

    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound { .. } => libc::ENOENT,
            StoreError::Errno { errno, .. } => *errno,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The error a TMAP update gives, as the OSD's TMAPUP would.
pub fn tmap_error(oid: &str, e: crate::format::tmap::ApplyError) -> StoreError {
    match e {
        crate::format::tmap::ApplyError::NoKey => StoreError::NotFound {
            op: "tmap_update",
            oid: oid.to_string(),
        },
        crate::format::tmap::ApplyError::Invalid => StoreError::Errno {
            op: "tmap_update",
            oid: oid.to_string(),
            errno: libc::EINVAL,
        },
    }
}

/// Largest metadata object (header, directory) we read whole. Real ones are
/// a few KiB; the bound keeps a hostile object from exhausting memory.
pub const MAX_METADATA_OBJECT: u64 = 16 << 20;

/// What `df` shows for the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Raw capacity and free space of the cluster.
    pub total_bytes: u64,
    pub avail_bytes: u64,
    /// Bytes and objects stored in this pool.
    pub pool_bytes: u64,
    pub pool_objects: u64,
}

/// One pool of the cluster, as [`ObjectStore::list_pools`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub id: i64,
    pub name: String,
    /// Applications enabled on the pool (`rbd`, `rgw`, `cephfs`, ...).
    pub applications: Vec<String>,
}

impl PoolEntry {
    /// Whether the `rbd` application is enabled (`rbd pool init`).
    pub fn is_rbd(&self) -> bool {
        self.applications.iter().any(|a| a == "rbd")
    }
}

/// What a watch reports.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// A notification with its payload (already acknowledged).
    Notify(&'a [u8]),
    /// The watch broke (errno); notifications may have been missed.
    Error(i32),
}

/// Called for each event on a watched object; what it returns is the
/// payload of the acknowledgement (empty for a plain ack).
pub type WatchCallback = Box<dyn Fn(WatchEvent<'_>) -> Vec<u8> + Send + Sync>;

/// What a notification got back: who acknowledged it (with their reply
/// payloads) and who did not answer in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyReplies {
    /// (watcher gid, watch cookie, ack payload).
    pub acks: Vec<(u64, u64, Vec<u8>)>,
    /// (watcher gid, watch cookie).
    pub timeouts: Vec<(u64, u64)>,
}

/// The calls rbdfs makes on one pool.
pub trait ObjectStore: Send + Sync {
    /// Reads up to `len` bytes at `offset` of `oid` as of snapshot `snap`
    /// (NOSNAP for the head). Short when the object is shorter; NotFound
    /// when the object does not exist at that snapshot.
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>>;

    /// Writes `data` at `offset`, creating the object if needed, with the
    /// snapshot context `snapc`.
    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()>;

    /// Writes non-overlapping extents of `oid` as one operation (one OSD
    /// transaction). The default writes them one by one.
    fn write_extents(
        &self,
        oid: &str,
        extents: &[(u64, &[u8])],
        snapc: &SnapContext,
    ) -> StoreResult<()> {
        extents
            .iter()
            .try_for_each(|&(offset, data)| self.write(oid, offset, data, snapc))
    }

    /// Size of the object at `snap`.
    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64>;

    /// Removes the object (the OSD keeps its data for the snapshots in
    /// `snapc`).
    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()>;

    /// Cuts the object to `size` bytes (with the snapshot context).
    fn truncate(&self, oid: &str, size: u64, snapc: &SnapContext) -> StoreResult<()>;

    /// Zeroes `[offset, offset+len)` of the object, deallocating where the
    /// OSD can (with the snapshot context).
    fn zero(&self, oid: &str, offset: u64, len: u64, snapc: &SnapContext) -> StoreResult<()>;

    /// Capacity and usage for `statfs`.
    fn usage(&self) -> StoreResult<Usage>;

    /// Calls object-class method `class.method` on `oid`; returns its reply.
    fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> StoreResult<Vec<u8>>;

    /// Applies one TMAP update command (see `format::tmap`).
    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()>;

    /// Allocates a new self-managed snapshot id in the pool.
    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId>;

    /// Releases a self-managed snapshot id (the OSDs trim its data).
    fn selfmanaged_snap_remove(&self, snap: SnapId) -> StoreResult<()>;

    /// Watches `oid`; `callback` runs for every notification (already
    /// acknowledged). The watch ends when the returned guard is dropped.
    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>>;

    /// Sends a notification to the watchers of `oid` and waits (up to
    /// `timeout_ms`) for their acknowledgements.
    fn notify(&self, oid: &str, payload: &[u8], timeout_ms: u64) -> StoreResult<NotifyReplies>;

    /// This client's global id (the gid of a ClientId).
    fn instance_id(&self) -> u64;

    /// This client's address as the OSDs see it (for lock descriptions).
    fn client_address(&self) -> String {
        String::new()
    }

    /// Blocklists a dead client (by address) so it can no longer write.
    fn blocklist_add(&self, address: &str, expire_secs: u32) -> StoreResult<()>;

    /// The store for another pool of the same cluster (data pools, clone
    /// parents), by pool id.
    fn pool_by_id(&self, pool_id: i64) -> StoreResult<std::sync::Arc<dyn ObjectStore>>;

    /// This pool's id.
    fn pool_id(&self) -> i64;

    /// Rolls the head of `oid` back to its contents at `snap` (the OSD's
    /// self-managed snapshot rollback; an object that did not exist then
    /// is removed), with the snapshot context `snapc`.
    fn snap_rollback(&self, oid: &str, snap: SnapId, snapc: &SnapContext) -> StoreResult<()>;

    /// A Ceph configuration value of this client (`rbd_default_clone_format`
    /// ...), None when the option is unknown.
    fn config_value(&self, _key: &str) -> Option<String> {
        None
    }

    /// The larger of the cluster's minimum and required-minimum compatible
    /// client releases (luminous = 12, mimic = 13, ...), as librados'
    /// `get_min_compatible_client` says; what `rbd clone` decides the
    /// clone format by.
    fn min_compat_client(&self) -> StoreResult<i8> {
        Ok(16)
    }

    /// The RADOS namespace every operation of this handle is in (`""`:
    /// the default namespace). [`ObjectStore::pool_by_id`] keeps it, as
    /// librbd keeps an image's namespace in its data pool.
    fn namespace(&self) -> String {
        String::new()
    }

    /// Pool `pool_id` in namespace `namespace` (clone parents, which may
    /// live in any pool and namespace; other namespaces of this pool).
    fn pool_in_namespace(
        &self,
        pool_id: i64,
        namespace: &str,
    ) -> StoreResult<std::sync::Arc<dyn ObjectStore>> {
        if namespace == self.namespace() {
            return self.pool_by_id(pool_id);
        }
        Err(StoreError::Errno {
            op: "pool_in_namespace",
            oid: format!("{pool_id}/{namespace}"),
            errno: libc::EOPNOTSUPP,
        })
    }

    /// This pool's name.
    fn pool_name(&self) -> String {
        self.pool_id().to_string()
    }

    /// The pools of the cluster as of the latest OSD map, with the
    /// applications enabled on each.
    fn list_pools(&self) -> StoreResult<Vec<PoolEntry>> {
        Err(StoreError::Errno {
            op: "list_pools",
            oid: String::new(),
            errno: libc::EOPNOTSUPP,
        })
    }

    /// Pool `name` of the same cluster, in namespace `namespace`.
    fn pool_by_name(
        &self,
        name: &str,
        namespace: &str,
    ) -> StoreResult<std::sync::Arc<dyn ObjectStore>> {
        Err(StoreError::Errno {
            op: "pool_by_name",
            oid: format!("{name}/{namespace}"),
            errno: libc::EOPNOTSUPP,
        })
    }

    /// Which RADOS client serves this store: changes when the store
    /// replaced a lost (blocklisted) client with a new one (see
    /// [`reconnecting`]), so that images re-watch and re-take their locks.
    /// Stores that never reconnect stay at 0.
    fn generation(&self) -> u64 {
        0
    }

    /// Reads a whole small object at the head, bounded by
    /// [`MAX_METADATA_OBJECT`], in one read: a stat then a read could see
    /// the object grow in between (a header gaining a snapshot) and return
    /// a cut-off copy.
    fn read_full(&self, oid: &str) -> StoreResult<Vec<u8>> {
        read_whole(oid, |want| self.read(oid, 0, want, NOSNAP))
    }
}

/// The whole of small object `oid` through `read_from_start(len)` (a read
/// of up to `len` bytes from offset 0), in one read when it fits in 64 KiB:
/// the read grows fourfold until it comes back short, up to
/// [`MAX_METADATA_OBJECT`] (EFBIG past it).
pub(crate) fn read_whole(
    oid: &str,
    mut read_from_start: impl FnMut(usize) -> StoreResult<Vec<u8>>,
) -> StoreResult<Vec<u8>> {
    let mut want = 64 << 10;
    loop {
        let data = read_from_start(want)?;
        if data.len() < want {
            return Ok(data);
        }
        if want as u64 >= MAX_METADATA_OBJECT {
            return Err(StoreError::Errno {
                op: "read",
                oid: oid.to_string(),
                errno: libc::EFBIG,
            });
        }
        want *= 4;
    }
}

/// Keeps a watch alive; dropping it unwatches.
pub trait WatchGuard: Send + Sync {
    /// The watch cookie: with the instance id it identifies this watcher
    /// (librbd's ClientId handle).
    fn cookie(&self) -> u64;
}

/// Decodes the reply buffer of `rados_notify2`: u32 count, count × (u64
/// gid, u64 cookie, u32 len, payload), u32 count, count × (u64 gid, u64
/// cookie).
pub fn decode_notify_replies(buf: &[u8]) -> Option<NotifyReplies> {
    let mut d = crate::format::decode::Decoder::new(buf, "notify reply");
    let mut out = NotifyReplies::default();
    let n = d.count(20).ok()?;
    for _ in 0..n {
        let gid = d.u64().ok()?;
        let cookie = d.u64().ok()?;
        let payload = d.blob().ok()?.to_vec();
        out.acks.push((gid, cookie, payload));
    }
    if d.is_empty() {
        return Some(out);
    }
    let n = d.count(16).ok()?;
    for _ in 0..n {
        out.timeouts.push((d.u64().ok()?, d.u64().ok()?));
    }
    Some(out)
}
