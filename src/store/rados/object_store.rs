//! [`ObjectStore`] over librados: each call is one synchronous librados
//! operation on the pool's context for its snapshot or snap context.

use std::ffi::c_char;
use std::ptr;
use std::sync::Arc;

use ceph::rados::*;

use super::ConnectError;
use super::ffi::{self, PoolStat, full_try};
use super::pool::{IoCtx, RadosPool, check, oid_c, read_at, set_namespace};
use super::watch;
use crate::format::tmap::{ApplyError, Tmap};
use crate::store::*;

impl ObjectStore for RadosPool {
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>> {
        let io = self.reader(snap)?;
        let o = oid_c(oid)?;
        read_at(&io, oid, &o, offset, len)
    }

    fn read_full(&self, oid: &str) -> StoreResult<Vec<u8>> {
        let o = oid_c(oid)?;
        Ok(self.read_with_version(&self.base, oid, &o)?.0)
    }

    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()> {
        let io = self.writer(snapc)?;
        let o = oid_c(oid)?;
        // SAFETY: `io` is a live context, `o` a NUL-terminated CString, and
        // `data` is a live slice of `data.len()` bytes, which librados copies
        // before returning.
        let rc = unsafe {
            rados_write(
                io.0,
                o.as_ptr(),
                data.as_ptr() as *const c_char,
                data.len(),
                offset,
            )
        };
        check("write", oid, rc).map(drop)
    }

    fn write_extents(
        &self,
        oid: &str,
        extents: &[(u64, &[u8])],
        snapc: &SnapContext,
    ) -> StoreResult<()> {
        let io = self.writer(snapc)?;
        let o = oid_c(oid)?;
        // SAFETY: the write op is created, used and released here only; each
        // extent is a live slice of its stated length, and the op is operated
        // (librados copies the data) before it is released; `io` and `o` are
        // live.
        let rc = unsafe {
            let op = rados_create_write_op();
            for &(offset, data) in extents {
                rados_write_op_write(op, data.as_ptr() as *const c_char, data.len(), offset);
            }
            let rc = rados_write_op_operate(op, io.0, o.as_ptr(), ptr::null_mut(), 0);
            rados_release_write_op(op);
            rc
        };
        check("write", oid, rc).map(drop)
    }

    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64> {
        let io = self.reader(snap)?;
        let o = oid_c(oid)?;
        let mut size = 0u64;
        let mut mtime: libc::time_t = 0;
        // SAFETY: `io` is a live context, `o` a NUL-terminated CString, and
        // `size`/`mtime` are valid out-pointers.
        let rc = unsafe { rados_stat(io.0, o.as_ptr(), &mut size, &mut mtime) };
        check("stat", oid, rc)?;
        Ok(size)
    }

    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()> {
        let io = self.writer(snapc)?;
        let o = oid_c(oid)?;
        // SAFETY: `io` is a live context and `o` a NUL-terminated CString.
        let rc = unsafe { rados_remove(io.0, o.as_ptr()) };
        check("remove", oid, rc).map(drop)
    }

    fn truncate(&self, oid: &str, size: u64, snapc: &SnapContext) -> StoreResult<()> {
        let io = self.writer(snapc)?;
        let o = oid_c(oid)?;
        // SAFETY: `io` is a live context and `o` a NUL-terminated CString.
        let rc = unsafe { rados_trunc(io.0, o.as_ptr(), size) };
        check("truncate", oid, rc).map(drop)
    }

    fn zero(&self, oid: &str, offset: u64, len: u64, snapc: &SnapContext) -> StoreResult<()> {
        let io = self.writer(snapc)?;
        let o = oid_c(oid)?;
        // SAFETY: the write op is created, used and released here only; `io`
        // is a live context and `o` a NUL-terminated CString.
        let rc = unsafe {
            let op = rados_create_write_op();
            rados_write_op_zero(op, offset, len);
            let rc = rados_write_op_operate(op, io.0, o.as_ptr(), ptr::null_mut(), 0);
            rados_release_write_op(op);
            rc
        };
        check("zero", oid, rc).map(drop)
    }

    fn usage(&self) -> StoreResult<Usage> {
        let mut cluster = Struct_rados_cluster_stat_t::default();
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // `cluster` is a valid out-pointer to the stats struct librados fills.
        let rc = unsafe { rados_cluster_stat(self.cluster.handle, &mut cluster) };
        check("cluster_stat", &self.name, rc)?;
        let mut pool = PoolStat::default();
        // SAFETY: `self.base` is a live context; `PoolStat` has the full size
        // of librados 16's `rados_pool_stat_t` (see its definition), so the
        // write stays inside it.
        let rc = unsafe { ffi::rados_ioctx_pool_stat(self.base.0, &mut pool) };
        check("pool_stat", &self.name, rc)?;
        Ok(Usage {
            total_bytes: cluster.kb.saturating_mul(1024),
            avail_bytes: cluster.kb_avail.saturating_mul(1024),
            pool_bytes: pool.num_bytes,
            pool_objects: pool.num_objects,
        })
    }

    fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> StoreResult<Vec<u8>> {
        let o = oid_c(oid)?;
        let c = oid_c(class)?;
        let m = oid_c(method)?;
        // The reply size is unknown up front; librados answers ERANGE when
        // the buffer is too small.
        let mut cap = 4096usize;
        loop {
            let mut out = vec![0u8; cap];
            // SAFETY: `self.base` is a live context; `o`, `c` and `m` are NUL-
            // terminated CStrings; `input` is a live slice of `input.len()`
            // bytes and `out` is `cap` bytes, the most librados writes.
            let rc = unsafe {
                rados_exec(
                    self.base.0,
                    o.as_ptr(),
                    c.as_ptr(),
                    m.as_ptr(),
                    input.as_ptr() as *const c_char,
                    input.len(),
                    out.as_mut_ptr() as *mut c_char,
                    cap,
                )
            };
            if rc == -libc::ERANGE && (cap as u64) < MAX_METADATA_OBJECT {
                cap *= 8;
                continue;
            }
            let n = check("exec", oid, rc)? as usize;
            out.truncate(n);
            return Ok(out);
        }
    }

    /// librados 16's C `rados_tmap_update` is a stub that answers
    /// EOPNOTSUPP without asking the OSD, so the update is a read, the
    /// command applied here, and a write guarded by the object's version:
    /// if another client changed the directory in between, the write is
    /// refused and we start over. Nothing is lost to a race.
    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()> {
        let o = oid_c(oid)?;
        for _ in 0..64 {
            // A private context: the version read below is per context.
            let io = self.new_ctx()?;
            let (current, version) = match self.read_with_version(&io, oid, &o) {
                Ok(v) => v,
                Err(e) if e.is_not_found() => (Vec::new(), None),
                Err(e) => return Err(e),
            };
            let mut map =
                Tmap::decode(&current).map_err(|_| tmap_error(oid, ApplyError::Invalid))?;
            map.apply(command).map_err(|e| tmap_error(oid, e))?;
            let encoded = map.encode();
            // SAFETY: the write op is created, used and released here only;
            // `encoded` outlives the operate call (which copies it); `io` is a
            // live context and `o` a NUL-terminated CString.
            let rc = unsafe {
                let op = rados_create_write_op();
                match version {
                    Some(v) => rados_write_op_assert_version(op, v),
                    // It did not exist: create it, failing if someone else did.
                    None => rados_write_op_create(op, 1, ptr::null()),
                }
                rados_write_op_write_full(op, encoded.as_ptr() as *const c_char, encoded.len());
                let rc = rados_write_op_operate(op, io.0, o.as_ptr(), ptr::null_mut(), 0);
                rados_release_write_op(op);
                rc
            };
            match -rc {
                0 => return Ok(()),
                // Lost a race (version moved on, or created meanwhile).
                libc::ERANGE | libc::EOVERFLOW | libc::EEXIST => continue,
                _ => return check("tmap_update", oid, rc).map(drop),
            }
        }
        Err(StoreError::Errno {
            op: "tmap_update",
            oid: oid.to_string(),
            errno: libc::EBUSY,
        })
    }

    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId> {
        let mut id: rados_snap_t = 0;
        // SAFETY: `self.base` is a live context and `id` a valid out-pointer.
        let rc = unsafe { rados_ioctx_selfmanaged_snap_create(self.base.0, &mut id) };
        check("selfmanaged_snap_create", &self.name, rc)?;
        Ok(id)
    }

    fn selfmanaged_snap_remove(&self, snap: SnapId) -> StoreResult<()> {
        // SAFETY: `self.base` is a live context.
        let rc = unsafe { rados_ioctx_selfmanaged_snap_remove(self.base.0, snap) };
        check("selfmanaged_snap_remove", &self.name, rc).map(drop)
    }

    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>> {
        watch::watch(&self.base, &self.cluster, oid, callback)
    }

    fn notify(&self, oid: &str, payload: &[u8], timeout_ms: u64) -> StoreResult<NotifyReplies> {
        let o = oid_c(oid)?;
        let mut reply: *mut c_char = ptr::null_mut();
        let mut reply_len: usize = 0;
        // SAFETY: `self.base` is a live context, `o` a NUL-terminated CString,
        // `payload` a live slice of the stated length, and `reply`/`reply_len`
        // valid out-pointers.
        let rc = unsafe {
            rados_notify2(
                self.base.0,
                o.as_ptr(),
                payload.as_ptr() as *const c_char,
                payload.len() as i32,
                timeout_ms,
                &mut reply,
                &mut reply_len,
            )
        };
        let replies = if reply.is_null() {
            NotifyReplies::default()
        } else {
            // SAFETY: librados set `reply` (non-null here) to a buffer of
            // `reply_len` bytes that stays allocated until rados_buffer_free
            // below.
            let bytes = unsafe { std::slice::from_raw_parts(reply as *const u8, reply_len) };
            let decoded = decode_notify_replies(bytes).unwrap_or_default();
            // SAFETY: `reply` is the buffer rados_notify2 allocated for us,
            // freed once, after its last use (`bytes` is not used past the
            // decode).
            unsafe { rados_buffer_free(reply) };
            decoded
        };
        // A watcher that timed out is reported in the replies, not as our
        // failure.
        if rc == -libc::ETIMEDOUT {
            return Ok(replies);
        }
        check("notify", oid, rc)?;
        Ok(replies)
    }

    fn instance_id(&self) -> u64 {
        self.cluster.instance_id()
    }

    fn client_address(&self) -> String {
        self.cluster.address()
    }

    fn blocklist_add(&self, address: &str, expire_secs: u32) -> StoreResult<()> {
        let addr = oid_c(address)?;
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // `addr` is a NUL-terminated CString alive across the call (librados
        // does not write through the pointer despite its `*mut` type).
        let rc = unsafe {
            rados_blacklist_add(
                self.cluster.handle,
                addr.as_ptr() as *mut c_char,
                expire_secs,
            )
        };
        check("blocklist_add", address, rc).map(drop)
    }

    fn snap_rollback(&self, oid: &str, snap: SnapId, snapc: &SnapContext) -> StoreResult<()> {
        let io = self.writer(snapc)?;
        let o = oid_c(oid)?;
        // SAFETY: `io` is a live context (its write snap context is
        // `snapc`, never changed while we hold it) and `o` a NUL-terminated
        // CString alive across the call.
        let rc = unsafe { rados_ioctx_selfmanaged_snap_rollback(io.0, o.as_ptr(), snap) };
        check("selfmanaged_snap_rollback", oid, rc).map(drop)
    }

    fn config_value(&self, key: &str) -> Option<String> {
        let k = std::ffi::CString::new(key).ok()?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // `k` is NUL-terminated, and `buf` is writable for its length,
        // which librados is told.
        let rc = unsafe {
            rados_conf_get(
                self.cluster.handle,
                k.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
            )
        };
        if rc < 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8(buf[..end].to_vec()).ok()
    }

    fn min_compat_client(&self) -> StoreResult<i8> {
        let (mut min, mut required) = (0i8, 0i8);
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // both out-pointers are valid for the call.
        let rc = unsafe {
            ffi::rados_get_min_compatible_client(self.cluster.handle, &mut min, &mut required)
        };
        check("get_min_compatible_client", "", rc)?;
        Ok(min.max(required))
    }

    fn pool_by_id(&self, pool_id: i64) -> StoreResult<Arc<dyn ObjectStore>> {
        if pool_id == self.id {
            return Ok(Arc::new(self.clone_handle()?));
        }
        let mut io: rados_ioctx_t = ptr::null_mut();
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // `io` is a valid out-pointer.
        let rc = unsafe { rados_ioctx_create2(self.cluster.handle, pool_id, &mut io) };
        check("ioctx_create2", &pool_id.to_string(), rc)?;
        full_try(io);
        let io = IoCtx(io);
        // librbd's data pools (and our pool_by_id users) keep the image's
        // namespace.
        set_namespace(&io, &self.namespace)?;
        let mut pool = RadosPool::from_ctx(self.cluster.clone(), io);
        pool.namespace = self.namespace.clone();
        Ok(Arc::new(pool))
    }

    fn pool_id(&self) -> i64 {
        self.id
    }

    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    fn pool_in_namespace(
        &self,
        pool_id: i64,
        namespace: &str,
    ) -> StoreResult<Arc<dyn ObjectStore>> {
        let mut io: rados_ioctx_t = ptr::null_mut();
        // SAFETY: the cluster handle is live while `self.cluster` is held;
        // `io` is a valid out-pointer.
        let rc = unsafe { rados_ioctx_create2(self.cluster.handle, pool_id, &mut io) };
        check("ioctx_create2", &pool_id.to_string(), rc)?;
        full_try(io);
        let io = IoCtx(io);
        set_namespace(&io, namespace)?;
        let mut pool = RadosPool::from_ctx(self.cluster.clone(), io);
        pool.namespace = namespace.to_string();
        Ok(Arc::new(pool))
    }

    fn pool_name(&self) -> String {
        self.name.clone()
    }

    fn list_pools(&self) -> StoreResult<Vec<PoolEntry>> {
        self.cluster.list_pools()
    }

    fn pool_by_name(&self, name: &str, namespace: &str) -> StoreResult<Arc<dyn ObjectStore>> {
        let pool = self
            .cluster
            .open_pool_in_namespace(name, namespace)
            .map_err(|e| match e {
                ConnectError::NoPool { pool } => StoreError::NotFound {
                    op: "pool_by_name",
                    oid: pool,
                },
                ConnectError::Pool { pool, errno } => StoreError::Errno {
                    op: "pool_by_name",
                    oid: pool,
                    errno,
                },
                other => StoreError::Errno {
                    op: "pool_by_name",
                    oid: other.to_string(),
                    errno: libc::EINVAL,
                },
            })?;
        Ok(Arc::new(pool))
    }
}
