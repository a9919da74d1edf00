//! The librados implementation of [`ObjectStore`], over the raw C bindings
//! of the `ceph` crate (its safe API lacks exec, TMAP, snap contexts and
//! watch/notify).
//!
//! Snapshot state lives on a librados I/O context, not on an operation: the
//! read snap id (`rados_ioctx_snap_set_read`) and the write snap context
//! (`rados_ioctx_selfmanaged_snap_set_write_ctx`). Changing either on a
//! context that has I/O in flight races with that I/O, so each distinct
//! snap id and snap context gets its own context, set once at creation and
//! never changed; a small LRU keeps the recently used ones.

use std::ffi::{CString, c_char, c_int, c_void};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;

use ceph::rados::*;
use lru::LruCache;
use parking_lot::Mutex;

use super::*;
use crate::format::tmap::{ApplyError, Tmap};

/// `struct rados_pool_stat_t` as librados 16 (Pacific) defines it. The
/// `ceph` crate's copy lacks the last four fields, so librados wrote 32
/// bytes past it: a stack smash on every `statfs`. Declared here with its
/// real size, with a binding of our own.
#[repr(C)]
#[derive(Default)]
struct PoolStat {
    num_bytes: u64,
    num_kb: u64,
    num_objects: u64,
    num_object_clones: u64,
    num_object_copies: u64,
    num_objects_missing_on_primary: u64,
    num_objects_unfound: u64,
    num_objects_degraded: u64,
    num_rd: u64,
    num_rd_kb: u64,
    num_wr: u64,
    num_wr_kb: u64,
    num_user_bytes: u64,
    compressed_bytes_orig: u64,
    compressed_bytes: u64,
    compressed_bytes_alloc: u64,
}

mod pool_stat_ffi {
    use super::PoolStat;
    #[link(name = "rados")]
    unsafe extern "C" {
        pub fn rados_ioctx_pool_stat(
            io: ceph::rados::rados_ioctx_t,
            stats: *mut PoolStat,
        ) -> libc::c_int;
        /// Not in the `ceph` crate's bindings (librados 12+).
        pub fn rados_set_pool_full_try(io: ceph::rados::rados_ioctx_t);
        /// Not in the `ceph` crate's bindings (librados 13+).
        pub fn rados_get_min_compatible_client(
            cluster: ceph::rados::rados_t,
            min_compat_client: *mut i8,
            require_min_compat_client: *mut i8,
        ) -> libc::c_int;
        /// Not in the `ceph` crate's bindings (librados 12+): the
        /// applications enabled on the pool, NUL-separated.
        pub fn rados_application_list(
            io: ceph::rados::rados_ioctx_t,
            values: *mut libc::c_char,
            values_len: *mut libc::size_t,
        ) -> libc::c_int;
        /// Not in the `ceph` crate's bindings (librados 14+): this client's
        /// addresses, a string to free with `rados_buffer_free`.
        pub fn rados_getaddrs(
            cluster: ceph::rados::rados_t,
            addrs: *mut *mut libc::c_char,
        ) -> libc::c_int;
    }
}

/// Every I/O context we make sends its operations even when the pool or
/// cluster is flagged full (quota reached, OSDs full): a write then fails
/// at once with EDQUOT or ENOSPC, which we can report, instead of waiting
/// for space until `rados_timeout`; deletes (removing an image or snapshot
/// to make room) go through, as `rbd rm` does.
fn full_try(io: rados_ioctx_t) {
    // SAFETY: io is a live I/O context that we just created; the call only
    // sets a flag on it.
    unsafe { pool_stat_ffi::rados_set_pool_full_try(io) };
}

/// How to reach the cluster, following Ceph's conventions.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `-c/--conf`; None searches `CEPH_CONF` and librados' default paths.
    pub conf: Option<PathBuf>,
    /// `--id`: the client name without `client.`.
    pub id: Option<String>,
    pub keyring: Option<PathBuf>,
    /// Seconds before connecting, a monitor op or an OSD op gives up.
    pub timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read ceph configuration {path}: {}", errno_text(*.errno))]
    Conf { path: String, errno: i32 },
    #[error("invalid option {name}={value}: {}", errno_text(*.errno))]
    Option {
        name: String,
        value: String,
        errno: i32,
    },
    #[error("cannot connect to the cluster: {}", errno_text(*.errno))]
    Connect { errno: i32 },
    #[error("pool '{pool}' does not exist")]
    NoPool { pool: String },
    #[error("cannot open pool '{pool}': {}", errno_text(*.errno))]
    Pool { pool: String, errno: i32 },
    #[error("{0} contains a NUL byte")]
    Nul(String),
}

impl ConnectError {
    /// The errno behind the error (EINVAL when there is none).
    pub fn errno(&self) -> i32 {
        match self {
            ConnectError::Conf { errno, .. }
            | ConnectError::Option { errno, .. }
            | ConnectError::Connect { errno }
            | ConnectError::Pool { errno, .. } => *errno,
            ConnectError::NoPool { .. } => libc::ENOENT,
            ConnectError::Nul(_) => libc::EINVAL,
        }
    }
}

fn cstr(s: &str) -> Result<CString, ConnectError> {
    CString::new(s).map_err(|_| ConnectError::Nul(s.to_string()))
}

/// A connected librados cluster handle.
pub struct RadosCluster {
    handle: rados_t,
}

// SAFETY: a librados cluster handle may be used from any thread at once
// (librados locks internally); we never mutate it from Rust.
unsafe impl Send for RadosCluster {}
// SAFETY: as for Send.
unsafe impl Sync for RadosCluster {}

impl Drop for RadosCluster {
    fn drop(&mut self) {
        // SAFETY: `handle` came from a successful rados_create and this is its
        // one shutdown (Drop runs once); every RadosPool and RadosWatch holds
        // an Arc of the cluster, so it is never used after this.
        unsafe { rados_shutdown(self.handle) }
    }
}

impl RadosCluster {
    pub fn connect(opts: &ConnectOptions) -> Result<Arc<RadosCluster>, ConnectError> {
        let id = opts.id.as_deref().map(cstr).transpose()?;
        let mut handle: rados_t = ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer; `id` is a NUL-terminated
        // CString (or null, which librados takes as the default id) that
        // outlives the call.
        let rc =
            unsafe { rados_create(&mut handle, id.as_ref().map_or(ptr::null(), |c| c.as_ptr())) };
        if rc < 0 {
            return Err(ConnectError::Connect { errno: -rc });
        }
        // From here `cluster` owns the handle and shuts it down on error.
        let cluster = RadosCluster { handle };
        let conf = opts
            .conf
            .as_ref()
            .map(|p| cstr(&p.to_string_lossy()))
            .transpose()?;
        // SAFETY: `handle` was created above and not shut down (`cluster` owns
        // it); `conf` is a NUL-terminated CString or null (default search),
        // alive across the call.
        let rc = unsafe {
            rados_conf_read_file(handle, conf.as_ref().map_or(ptr::null(), |c| c.as_ptr()))
        };
        if rc < 0 {
            let path = match &opts.conf {
                Some(p) => p.display().to_string(),
                None => std::env::var("CEPH_CONF").unwrap_or_else(|_| {
                    "(default search: /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf)".into()
                }),
            };
            return Err(ConnectError::Conf { path, errno: -rc });
        }
        // CEPH_ARGS overrides the file, and command-line options override both.
        // SAFETY: `handle` is the live handle created above; a null argument
        // list is allowed and means CEPH_ARGS.
        unsafe { rados_conf_parse_env(handle, ptr::null()) };
        if let Some(k) = &opts.keyring {
            cluster.set("keyring", &k.to_string_lossy())?;
        }
        if opts.timeout_secs > 0 {
            let t = opts.timeout_secs.to_string();
            for name in [
                "client_mount_timeout",
                "rados_mon_op_timeout",
                "rados_osd_op_timeout",
            ] {
                cluster.set(name, &t)?;
            }
        }
        // SAFETY: `handle` is the live, configured handle created above.
        let rc = unsafe { rados_connect(handle) };
        if rc < 0 {
            return Err(ConnectError::Connect { errno: -rc });
        }
        Ok(Arc::new(cluster))
    }

    fn set(&self, name: &str, value: &str) -> Result<(), ConnectError> {
        let (n, v) = (cstr(name)?, cstr(value)?);
        // SAFETY: `self.handle` is a connected cluster handle, valid until
        // Drop; `n` and `v` are NUL-terminated CStrings alive across the call.
        let rc = unsafe { rados_conf_set(self.handle, n.as_ptr(), v.as_ptr()) };
        if rc < 0 {
            return Err(ConnectError::Option {
                name: name.into(),
                value: value.into(),
                errno: -rc,
            });
        }
        Ok(())
    }

    /// This client's global id (the `gid` of a ClientId).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: `self.handle` is a connected cluster handle, valid until
        // Drop.
        unsafe { rados_get_instance_id(self.handle) }
    }

    /// This client's address(es) as librados prints them (for log lines;
    /// e.g. `[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]`), or "" if unknown.
    pub fn address(&self) -> String {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: `self.handle` is a connected cluster handle, valid until
        // Drop; `out` is a valid out-pointer.
        let rc = unsafe { pool_stat_ffi::rados_getaddrs(self.handle, &mut out) };
        if rc < 0 || out.is_null() {
            return String::new();
        }
        // SAFETY: librados set `out` (non-null) to a NUL-terminated string
        // it allocated; we copy it before freeing it once.
        let text = unsafe { std::ffi::CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `out` is the buffer rados_getaddrs allocated for us, freed
        // once, after its last use above.
        unsafe { rados_buffer_free(out) };
        text
    }

    pub fn open_pool(self: &Arc<Self>, pool: &str) -> Result<RadosPool, ConnectError> {
        let name = cstr(pool)?;
        let mut io: rados_ioctx_t = ptr::null_mut();
        // SAFETY: `self.handle` is a connected cluster handle, valid until
        // Drop; `name` is a NUL-terminated CString and `io` a valid out-
        // pointer.
        let rc = unsafe { rados_ioctx_create(self.handle, name.as_ptr(), &mut io) };
        if rc == -libc::ENOENT {
            return Err(ConnectError::NoPool { pool: pool.into() });
        }
        if rc < 0 {
            return Err(ConnectError::Pool {
                pool: pool.into(),
                errno: -rc,
            });
        }
        full_try(io);
        Ok(RadosPool::from_ctx(self.clone(), IoCtx(io)))
    }
}

/// Sets the RADOS namespace of a context nobody uses yet.
fn set_namespace(io: &IoCtx, namespace: &str) -> StoreResult<()> {
    let ns = oid_c(namespace)?;
    // SAFETY: `io.0` is a live context not yet shared (no I/O in flight on
    // it); `ns` is a NUL-terminated CString, copied by librados.
    unsafe { rados_ioctx_set_namespace(io.0, ns.as_ptr()) };
    Ok(())
}

/// Splits a librados list of NUL-terminated strings.
fn nul_separated(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl RadosCluster {
    /// Pool `pool` with every context in RADOS namespace `namespace` (`""`:
    /// the default one).
    pub fn open_pool_in_namespace(
        self: &Arc<Self>,
        pool: &str,
        namespace: &str,
    ) -> Result<RadosPool, ConnectError> {
        let mut p = self.open_pool(pool)?;
        if !namespace.is_empty() {
            set_namespace(&p.base, namespace).map_err(|_| ConnectError::Nul(namespace.into()))?;
            p.namespace = namespace.to_string();
        }
        Ok(p)
    }

    /// Every pool of the latest OSD map (asked of the monitor first, so a
    /// pool made a moment ago is there), with its applications.
    pub fn list_pools(self: &Arc<Self>) -> StoreResult<Vec<PoolEntry>> {
        // SAFETY: `self.handle` is a connected cluster handle, valid until
        // Drop.
        let rc = unsafe { rados_wait_for_latest_osdmap(self.handle) };
        check("wait_for_latest_osdmap", "", rc)?;
        let mut cap = 4096usize;
        let names = loop {
            let mut buf = vec![0u8; cap];
            // SAFETY: `buf` is `cap` bytes, the most librados writes; the
            // handle is live.
            let rc = unsafe { rados_pool_list(self.handle, buf.as_mut_ptr() as *mut c_char, cap) };
            let need = check("pool_list", "", rc)? as usize;
            if need > cap {
                cap = need;
                continue;
            }
            buf.truncate(need);
            break nul_separated(&buf);
        };
        let mut out = Vec::new();
        for name in names {
            let pool = match self.open_pool(&name) {
                Ok(p) => p,
                // Deleted since the listing.
                Err(ConnectError::NoPool { .. }) => continue,
                Err(e) => {
                    return Err(StoreError::Errno {
                        op: "pool_list",
                        oid: e.to_string(),
                        errno: libc::EIO,
                    });
                }
            };
            let mut cap = 256usize;
            let applications = loop {
                let mut buf = vec![0u8; cap];
                let mut len = cap;
                // SAFETY: `pool.base` is a live context; `buf` is `len` bytes
                // and `len` a valid in/out pointer.
                let rc = unsafe {
                    pool_stat_ffi::rados_application_list(
                        pool.base.0,
                        buf.as_mut_ptr() as *mut c_char,
                        &mut len,
                    )
                };
                if rc == -libc::ERANGE && len > cap && len < (1 << 20) {
                    cap = len;
                    continue;
                }
                check("application_list", &name, rc)?;
                buf.truncate(len.min(cap));
                break nul_separated(&buf);
            };
            out.push(PoolEntry {
                id: pool.id,
                name,
                applications,
            });
        }
        Ok(out)
    }
}

/// One librados I/O context; destroyed when the last user drops it.
struct IoCtx(rados_ioctx_t);
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
    name: String,
    id: i64,
    /// The RADOS namespace every context of this handle is set to.
    namespace: String,
    /// Head reads, metadata and cls calls: no snap id, empty snap context.
    base: Arc<IoCtx>,
    writers: Mutex<LruCache<SnapContext, Arc<IoCtx>>>,
    readers: Mutex<LruCache<SnapId, Arc<IoCtx>>>,
    /// Last: fields drop in order, and the I/O contexts must be destroyed
    /// before a last reference to the cluster shuts it down.
    cluster: Arc<RadosCluster>,
}

fn oid_c(oid: &str) -> StoreResult<CString> {
    CString::new(oid).map_err(|_| StoreError::Errno {
        op: "name",
        oid: oid.replace('\0', "\\0"),
        errno: libc::EINVAL,
    })
}

fn check(op: &'static str, oid: &str, rc: i32) -> StoreResult<i32> {
    if rc < 0 {
        Err(StoreError::from_rc(op, oid, rc))
    } else {
        Ok(rc)
    }
}

impl RadosPool {
    fn from_ctx(cluster: Arc<RadosCluster>, io: IoCtx) -> RadosPool {
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
    fn clone_handle(&self) -> StoreResult<RadosPool> {
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

    fn new_ctx(&self) -> StoreResult<IoCtx> {
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
    fn read_with_version(
        &self,
        io: &IoCtx,
        oid: &str,
        o: &CString,
    ) -> StoreResult<(Vec<u8>, Option<u64>)> {
        let mut want = 64usize << 10;
        loop {
            let buf = read_at(io, oid, o, 0, want)?;
            if buf.len() < want {
                // SAFETY: `io.0` is a live context; the call only reads the
                // version of its last synchronous operation, this read.
                let version = unsafe { rados_get_last_version(io.0) };
                return Ok((buf, Some(version)));
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

    fn reader(&self, snap: SnapId) -> StoreResult<Arc<IoCtx>> {
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

    fn writer(&self, snapc: &SnapContext) -> StoreResult<Arc<IoCtx>> {
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
        let rc = unsafe { pool_stat_ffi::rados_ioctx_pool_stat(self.base.0, &mut pool) };
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
        let o = oid_c(oid)?;
        let state = Box::new(WatchState {
            io: self.base.clone(),
            oid: o,
            callback,
        });
        let arg = &*state as *const WatchState as *mut c_void;
        let mut cookie = 0u64;
        // SAFETY: `self.base` is a live context and `state.oid` a NUL-
        // terminated CString; `arg` points into the boxed WatchState, which
        // the returned RadosWatch keeps at the same address until its Drop has
        // unwatched and flushed every callback.
        let rc = unsafe {
            rados_watch2(
                self.base.0,
                state.oid.as_ptr(),
                &mut cookie,
                Some(watch_notify_trampoline),
                Some(watch_error_trampoline),
                arg,
            )
        };
        check("watch", oid, rc)?;
        Ok(Box::new(RadosWatch {
            cluster: self.cluster.clone(),
            state,
            cookie,
        }))
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
            pool_stat_ffi::rados_get_min_compatible_client(
                self.cluster.handle,
                &mut min,
                &mut required,
            )
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

struct WatchState {
    io: Arc<IoCtx>,
    oid: CString,
    callback: WatchCallback,
}

struct RadosWatch {
    state: Box<WatchState>,
    cookie: u64,
    /// Last, as in `RadosPool`: the watch's I/O context goes first.
    cluster: Arc<RadosCluster>,
}

impl WatchGuard for RadosWatch {
    fn cookie(&self) -> u64 {
        self.cookie
    }
}

// SAFETY: the state is only read from callbacks, which librados
// serialises per watch; the box outlives them (see Drop). Its callback is
// Send + Sync and its context thread-safe.
unsafe impl Send for RadosWatch {}
// SAFETY: as for Send.
unsafe impl Sync for RadosWatch {}

impl Drop for RadosWatch {
    fn drop(&mut self) {
        // SAFETY: `self.state.io` is a live context (held by the state) and
        // `self.cookie` the watch made in `watch`; the cluster handle is live
        // while `self.cluster` is held. After the flush no callback runs, so
        // the state may be freed.
        unsafe {
            rados_unwatch2(self.state.io.0, self.cookie);
            // Wait for callbacks in flight before the state is freed.
            rados_watch_flush(self.cluster.handle);
        }
    }
}

extern "C" fn watch_notify_trampoline(
    arg: *mut c_void,
    notify_id: u64,
    handle: u64,
    _notifier_id: u64,
    data: *mut c_void,
    data_len: usize,
) {
    // SAFETY: arg is the WatchState boxed in `watch`, alive until the
    // guard's Drop has flushed all callbacks.
    let state = unsafe { &*(arg as *const WatchState) };
    let payload = if data.is_null() || data_len == 0 {
        &[][..]
    } else {
        // SAFETY: librados passes a payload of `data_len` bytes (non-null
        // here) that stays valid for the duration of the callback.
        unsafe { std::slice::from_raw_parts(data as *const u8, data_len) }
    };
    let reply = (state.callback)(WatchEvent::Notify(payload));
    // Every notification must be acknowledged or its sender waits for the
    // timeout.
    // SAFETY: `state.io` is a live context and `state.oid` a NUL-terminated
    // CString (the state outlives every callback); `reply` is a live buffer of
    // the stated length.
    unsafe {
        rados_notify_ack(
            state.io.0,
            state.oid.as_ptr(),
            notify_id,
            handle,
            reply.as_ptr() as *const c_char,
            reply.len() as i32,
        );
    }
}

extern "C" fn watch_error_trampoline(arg: *mut c_void, _cookie: u64, err: i32) {
    // SAFETY: arg is the WatchState boxed in `watch`, alive until the guard's
    // Drop has flushed all callbacks.
    let state = unsafe { &*(arg as *const WatchState) };
    let _ = (state.callback)(WatchEvent::Error(-err));
}

/// Up to `len` bytes of object `o` (named `oid`, for errors) from `offset`,
/// through `io` (its read snapshot applies).
fn read_at(io: &IoCtx, oid: &str, o: &CString, offset: u64, len: usize) -> StoreResult<Vec<u8>> {
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
