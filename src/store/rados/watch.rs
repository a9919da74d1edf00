//! Watches on objects: librados calls our trampolines, which hand each
//! notification to the watch's callback and acknowledge it.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;

use ceph::rados::*;

use super::RadosCluster;
use super::pool::{IoCtx, check, oid_c};
use crate::store::{StoreResult, WatchCallback, WatchEvent, WatchGuard};

/// Watches object `oid` through `base` until the returned guard drops.
pub(super) fn watch(
    base: &Arc<IoCtx>,
    cluster: &Arc<RadosCluster>,
    oid: &str,
    callback: WatchCallback,
) -> StoreResult<Box<dyn WatchGuard>> {
    let o = oid_c(oid)?;
    let state = Box::new(WatchState {
        io: base.clone(),
        oid: o,
        callback,
    });
    let arg = &*state as *const WatchState as *mut c_void;
    let mut cookie = 0u64;
    // SAFETY: `base` is a live context and `state.oid` a NUL-
    // terminated CString; `arg` points into the boxed WatchState, which
    // the returned RadosWatch keeps at the same address until its Drop has
    // unwatched and flushed every callback.
    let rc = unsafe {
        rados_watch2(
            base.0,
            state.oid.as_ptr(),
            &mut cookie,
            Some(watch_notify_trampoline),
            Some(watch_error_trampoline),
            arg,
        )
    };
    check("watch", oid, rc)?;
    Ok(Box::new(RadosWatch {
        cluster: cluster.clone(),
        state,
        cookie,
    }))
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
