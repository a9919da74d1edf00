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
//!
//! Here: connecting ([`ConnectOptions`], [`RadosCluster`]) and listing
//! pools. `pool`: a pool handle and its contexts; `object_store`: the
//! [`ObjectStore`] calls; `watch`: watch/notify callbacks; `ffi`: librados
//! calls the `ceph` crate lacks.

mod ffi;
mod object_store;
mod pool;
mod watch;

use std::ffi::{CString, c_char};
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;

use ceph::rados::*;

use self::ffi::full_try;
pub use self::pool::RadosPool;
use self::pool::{IoCtx, check, set_namespace};
use super::*;

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
        let rc = unsafe { ffi::rados_getaddrs(self.handle, &mut out) };
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
                    ffi::rados_application_list(
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
