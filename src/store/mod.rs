//! The object store under everything: a small trait over the RADOS calls
//! rbdfs needs, with a librados implementation and an in-memory one that
//! tests use as a double.

pub mod memory;
pub mod rados;

use thiserror::Error;

/// A RADOS snapshot id. [`NOSNAP`] is the head (the live image).
pub type SnapId = u64;

/// CEPH_NOSNAP: reads "at" this id read the head. (u64::MAX is CEPH_SNAPDIR,
/// a different thing.)
pub const NOSNAP: SnapId = u64::MAX - 1;

/// The snapshot context every write to the head carries: the newest snap
/// seq and the image's snap ids, newest first. The OSD preserves an object's
/// old data for each snap id in it that the object has not seen yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SnapContext {
    pub seq: u64,
    pub snaps: Vec<SnapId>,
}

impl SnapContext {
    /// librados rejects a context whose ids are not strictly descending or
    /// exceed seq; checking here turns that into a clear error.
    pub fn is_valid(&self) -> bool {
        self.snaps.first().is_none_or(|&s| s <= self.seq)
            && self.snaps.windows(2).all(|w| w[0] > w[1])
    }
}

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

/// Largest metadata object (header, directory) we read whole. Real ones are
/// a few KiB; the bound keeps a hostile object from exhausting memory.
pub const MAX_METADATA_OBJECT: u64 = 16 << 20;

/// What a watch reports.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// A notification with its payload (already acknowledged).
    Notify(&'a [u8]),
    /// The watch broke (errno); notifications may have been missed.
    Error(i32),
}

/// Called for each event on a watched object.
pub type WatchCallback = Box<dyn Fn(WatchEvent<'_>) + Send + Sync>;

/// The calls rbdfs makes on one pool.
pub trait ObjectStore: Send + Sync {
    /// Reads up to `len` bytes at `offset` of `oid` as of snapshot `snap`
    /// (NOSNAP for the head). Short when the object is shorter; NotFound
    /// when the object does not exist at that snapshot.
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>>;

    /// Writes `data` at `offset`, creating the object if needed, with the
    /// snapshot context `snapc`.
    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()>;

    /// Size of the object at `snap`.
    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64>;

    /// Removes the object (the OSD keeps its data for the snapshots in
    /// `snapc`).
    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()>;

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

    /// Sends a notification to the watchers of `oid` and waits for them.
    fn notify(&self, oid: &str, payload: &[u8]) -> StoreResult<()>;

    /// Reads a whole small object at the head, bounded by
    /// [`MAX_METADATA_OBJECT`].
    fn read_full(&self, oid: &str) -> StoreResult<Vec<u8>> {
        let size = self.stat(oid, NOSNAP)?;
        if size > MAX_METADATA_OBJECT {
            return Err(StoreError::Errno {
                op: "read",
                oid: oid.to_string(),
                errno: libc::EFBIG,
            });
        }
        self.read(oid, 0, size as usize, NOSNAP)
    }
}

/// Keeps a watch alive; dropping it unwatches.
pub trait WatchGuard: Send + Sync {}
