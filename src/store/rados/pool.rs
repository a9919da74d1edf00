//! A pool handle: its librados I/O contexts, one per read snapshot and per
//! write snap context (see the parent module's doc), and the one-copy read
//! every data and metadata read goes through.

use std::ffi::{CString, c_char, c_int};
use std::num::NonZeroUsize;
use std::ptr;
use std::sync::Arc;

use ceph::rados::*;
use lru::LruCache;
use parking_lot::Mutex;

use super::RadosCluster;
use super::ffi::full_try;
use crate::store::*;

/// Sets the RADOS namespace of a context nobody uses yet.
pub(super) fn set_namespace(io: &IoCtx, namespace: &str) -> StoreResult<()> {
    let ns = oid_c(namespace)?;
    // SAFETY: `io.0` is a live context not yet shared (no I/O in flight on
    // it); `ns` is a NUL-terminated CString, copied by librados.
    unsafe { rados_ioctx_set_namespace(io.0, ns.as_ptr()) };
    Ok(())
}

/// One librados I/O context; destroyed when the last user drops it.
pub(super) struct IoCtx(pub(super) rados_ioctx_t);
// SAFETY: librados I/O contexts are thread-safe for I/O; the settings that
// are not (read snap, write snap context) are set once, before the
// context is shared (see the module doc).
unsafe impl Send for IoCtx {}
// SAFETY: as for Send.
unsafe impl Sync for IoCtx {}
impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from a successful rados_ioctx_create and this
        // is its one destroy (the IoCtx is shared by Arc and dropped once).
        unsafe { rados_ioctx_destroy(self.0) }
    }
}

pub struct RadosPool {
    pub(super) name: String,
    pub(super) id: i64,
    /// The RADOS namespace every context of this handle is set to.
    pub(super) namespace: String,
    /// Head reads, metadata and cls calls: no snap id, empty snap context.
    pub(super) base: Arc<IoCtx>,
    pub(super) writers: Mutex<LruCache<SnapContext, Arc<IoCtx>>>,
    pub(super) readers: Mutex<LruCache<SnapId, Arc<IoCtx>>>,
    /// Last: fields drop in order, and the I/O contexts must be destroyed
    /// before a last reference to the cluster shuts it down.
    pub(super) cluster: Arc<RadosCluster>,
}

pub(super) fn oid_c(oid: &str) -> StoreResult<CString> {
    CString::new(oid).map_err(|_| StoreError::Errno {
        op: "name",
        oid: oid.replace('\0', "\\0"),
        errno: libc::EINVAL,
    })
}

pub(super) fn check(op: &'static str, oid: &str, rc: i32) -> StoreResult<i32> {
    if rc < 0 {
        Err(StoreError::from_rc(op, oid, rc))
    } else {
        Ok(rc)
    }
}

impl RadosPool {
    pub(super) fn from_ctx(cluster: Arc<RadosCluster>, io: IoCtx) -> RadosPool {
        // SAFETY: `io.0` is a live I/O context (the IoCtx owns it).
        let id = unsafe { rados_ioctx_get_id(io.0) };
        let mut name_buf = vec![0u8; 256];
        // SAFETY: `io.0` is a live I/O context; librados writes at most
        // `name_buf.len()` bytes into the buffer, which is that long.
        let n = unsafe {
            rados_ioctx_get_pool_name(
                io.0,
                name_buf.as_mut_ptr() as *mut c_char,
                name_buf.len() as u32,
            )
        };
        name_buf.truncate(n.max(0) as usize);
        let cap = NonZeroUsize::new(32).expect("non-zero");
        RadosPool {
            cluster,
            name: String::from_utf8_lossy(&name_buf).into_owned(),
            id,
            namespace: String::new(),
            base: Arc::new(io),
            writers: Mutex::new(LruCache::new(cap)),
            readers: Mutex::new(LruCache::new(cap)),
        }
    }

    /// Another handle on the same pool (its own snap-context contexts).
    pub(super) fn clone_handle(&self) -> StoreResult<RadosPool> {
        let mut pool = RadosPool::from_ctx(self.cluster.clone(), self.new_ctx()?);
        pool.namespace = self.namespace.clone();
        Ok(pool)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &Arc<RadosCluster> {
        &self.cluster
    }

    pub(super) fn new_ctx(&self) -> StoreResult<IoCtx> {
        let name = oid_c(&self.name)?;
        let mut io: rados_ioctx_t = ptr::null_mut();
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // `name` is a NUL-terminated CString and `io` a valid out-pointer.
        let rc = unsafe { rados_ioctx_create(self.cluster.handle, name.as_ptr(), &mut io) };
        check("ioctx_create", &self.name, rc)?;
        full_try(io);
        let io = IoCtx(io);
        set_namespace(&io, &self.namespace)?;
        Ok(io)
    }

    /// The whole object and the version it had when read.
    pub(super) fn read_with_version(
        &self,
        io: &IoCtx,
        oid: &str,
        o: &CString,
    ) -> StoreResult<(Vec<u8>, Option<u64>)> {
        let buf = read_whole(oid, |want| read_at(io, oid, o, 0, want))?;
        // SAFETY: `io.0` is a live context; the call only reads the version
        // of its last synchronous operation: the last read above, if no
        // other thread uses the context (tmap_update's is private to it;
        // read_full, on the shared one, drops the version).
        let version = unsafe { rados_get_last_version(io.0) };
        Ok((buf, Some(version)))
    }

    pub(super) fn reader(&self, snap: SnapId) -> StoreResult<Arc<IoCtx>> {
        if snap == NOSNAP {
            return Ok(self.base.clone());
        }
        let mut readers = self.readers.lock();
        if let Some(io) = readers.get(&snap) {
            return Ok(io.clone());
        }
        let io = Arc::new(self.new_ctx()?);
        // SAFETY: `io` was just made and is not yet shared, so no I/O is in
        // flight on it while its read snap changes.
        unsafe { rados_ioctx_snap_set_read(io.0, snap) };
        readers.put(snap, io.clone());
        Ok(io)
    }

    pub(super) fn writer(&self, snapc: &SnapContext) -> StoreResult<Arc<IoCtx>> {
        if snapc.snaps.is_empty() && snapc.seq == 0 {
            return Ok(self.base.clone());
        }
        let mut writers = self.writers.lock();
        if let Some(io) = writers.get(snapc) {
            return Ok(io.clone());
        }
        if !snapc.is_valid() {
            return Err(StoreError::Errno {
                op: "set_write_ctx",
                oid: format!("{snapc:?}"),
                errno: libc::EINVAL,
            });
        }
        let io = Arc::new(self.new_ctx()?);
        let mut snaps = snapc.snaps.clone();
        // SAFETY: `io` was just made and is not shared yet; `snaps` is a live
        // vector of exactly `snaps.len()` ids, which librados copies.
        let rc = unsafe {
            rados_ioctx_selfmanaged_snap_set_write_ctx(
                io.0,
                snapc.seq,
                snaps.as_mut_ptr(),
                snaps.len() as i32,
            )
        };
        check("set_write_ctx", &self.name, rc)?;
        writers.put(snapc.clone(), io.clone());
        Ok(io)
    }
}

/// Up to `len` bytes of object `o` (named `oid`, for errors) from `offset`,
/// through `io` (its read snapshot applies).
pub(super) fn read_at(
    io: &IoCtx,
    oid: &str,
    o: &CString,
    offset: u64,
    len: usize,
) -> StoreResult<Vec<u8>> {
    // Not zero-filled: librados overwrites what it returns, and pages
    // never written stay untouched (no memset of a 4 MiB buffer per
    // object, no resident pages before the reply arrives).
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    // A read operation, not rados_read: librados 16's rados_read copies
    // the reply twice (the Objecter copies it into the caller's buffer,
    // then the op's own result replaces that buffer and rados_read
    // copies again), which profiles showed as 12 % of the daemon's CPU
    // in a sequential read. A read op's result is copied once.
    let mut bytes_read: usize = 0;
    let mut op_rc: c_int = 0;
    // SAFETY: `io` is a live context, `o` a NUL-terminated CString, and
    // `buf` has capacity for `len` bytes, the most librados writes;
    // `bytes_read` and `op_rc` outlive the synchronous operate call,
    // and the op is released once, after it.
    let rc = unsafe {
        let op = rados_create_read_op();
        rados_read_op_read(
            op,
            offset,
            len,
            buf.spare_capacity_mut().as_mut_ptr() as *mut c_char,
            &mut bytes_read,
            &mut op_rc,
        );
        let rc = rados_read_op_operate(op, io.0, o.as_ptr(), 0);
        rados_release_read_op(op);
        if rc < 0 { rc } else { op_rc }
    };
    check("read", oid, rc)?;
    let n = bytes_read.min(len);
    // SAFETY: librados wrote the first `n` bytes (what it reports read,
    // at most `len`, which is within the capacity).
    unsafe { buf.set_len(n) };
    Ok(buf)
}
