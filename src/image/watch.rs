//! The header watch: how other clients' changes (snapshots, resizes, lock
//! requests, quiesce before their snapshot) reach an open image.
//!
//! Setting a watch is a write-class RADOS operation. On a full pool it
//! waits for space (or fails with EDQUOT/ENOSPC), and a read-only CephX
//! user (`profile rbd-read-only`) may not set one at all (EPERM). Opening
//! and reading an image must not wait for it, so the watch is set by a
//! background thread, retried with backoff, and while it is missing the
//! header is re-read at most every [`UNWATCHED_REFRESH`]. Writers that need
//! the exclusive lock (whose cookie names the watch) try it inline, since
//! they write anyway.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use log::{debug, info, warn};
use parking_lot::Mutex;

use super::lock::ExclusiveLock;
use super::store_image::{QuiesceHook, quiesce};
use crate::format::v2::{NOTIFY_OP_QUIESCE, NotifyMessage};
use crate::store::{ObjectStore, StoreResult, WatchEvent, WatchGuard};

/// Without a watch, notifications are lost: the header is re-read this
/// often (at most), as the kernel re-asks for attributes after its TTL.
pub const UNWATCHED_REFRESH: Duration = Duration::from_secs(1);

/// Headers whose watch was refused and warned about, across opens of the
/// image (a read-only CephX user is refused at every open: one warning,
/// until a watch is set again).
static WARNED: std::sync::LazyLock<Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Backoff of the background attempts: first retry after 1 s, doubling.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub struct HeaderWatch {
    store: Arc<dyn ObjectStore>,
    oid: String,
    name: String,
    /// Set on a header-update notification and when the watch broke.
    stale: Arc<AtomicBool>,
    /// The watch broke: the owner re-watches (and re-takes the lock).
    broken: Arc<AtomicBool>,
    lock: Option<Arc<ExclusiveLock>>,
    quiesce_hook: Arc<Mutex<Option<QuiesceHook>>>,
    guard: Mutex<Option<Box<dyn WatchGuard>>>,
    /// One attempt at a time, background or inline.
    attempt: Mutex<()>,
    /// A background thread is retrying.
    retrying: AtomicBool,
    /// Failed attempts since the last success (the first is logged as a
    /// warning, the rest at debug level).
    failures: AtomicU32,
    /// The image was closed: the watch is gone and is not set again.
    released: AtomicBool,
}

impl HeaderWatch {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        oid: String,
        name: String,
        stale: Arc<AtomicBool>,
        broken: Arc<AtomicBool>,
        lock: Option<Arc<ExclusiveLock>>,
        quiesce_hook: Arc<Mutex<Option<QuiesceHook>>>,
    ) -> HeaderWatch {
        HeaderWatch {
            store,
            oid,
            name,
            stale,
            broken,
            lock,
            quiesce_hook,
            guard: Mutex::new(None),
            attempt: Mutex::new(()),
            retrying: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            released: AtomicBool::new(false),
        }
    }

    /// The watch handle (the exclusive lock's cookie names it), if set.
    pub fn cookie(&self) -> Option<u64> {
        self.guard.lock().as_ref().map(|g| g.cookie())
    }

    pub fn is_set(&self) -> bool {
        self.guard.lock().is_some()
    }

    /// Forgets a broken watch (unwatching it), so a new one can be set.
    pub fn drop_broken(&self) {
        *self.guard.lock() = None;
    }

    /// Forgets a watch of a lost RADOS client: it is unwatched on a thread
    /// of its own (the old client may take long to answer), and a new one
    /// is set through the store's new client.
    pub fn abandon(&self) {
        if let Some(old) = self.guard.lock().take() {
            let _ = std::thread::Builder::new()
                .name("rbdfs-unwatch".into())
                .spawn(move || drop(old));
        }
    }

    /// Unwatches the header for good (the image is closed): other clients
    /// must not see us as a watcher after an unmount, `rbd rm` refuses an
    /// image with watchers. Without this the watch lives as long as some
    /// reference to the image does, and if that outlives the process the
    /// OSD keeps it until its timeout (30 s), as for a crashed client.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        // An attempt in flight ends first, so it cannot set a watch after.
        let _one = self.attempt.lock();
        drop(self.guard.lock().take());
    }

    /// Sets the watch now if it is not set, waiting for RADOS: for callers
    /// that are about to write anyway. Returns the handle.
    pub fn set_now(&self) -> StoreResult<u64> {
        let _one = self.attempt.lock();
        if self.released.load(Ordering::SeqCst) {
            return Err(crate::store::StoreError::Errno {
                op: "watch (image closed)",
                oid: self.oid.clone(),
                errno: libc::ESHUTDOWN,
            });
        }
        if let Some(cookie) = self.cookie() {
            return Ok(cookie);
        }
        match self.store.watch(&self.oid, self.callback()) {
            Ok(guard) => {
                let cookie = guard.cookie();
                *self.guard.lock() = Some(guard);
                let failed = self.failures.swap(0, Ordering::SeqCst);
                let was_warned = WARNED.lock().remove(&self.oid);
                if failed > 0 || was_warned {
                    info!(
                        "image {}: header watch set (after {failed} failed attempts)",
                        self.name
                    );
                }
                // Notifications before now were not seen: read it again.
                self.stale.store(true, Ordering::SeqCst);
                Ok(cookie)
            }
            Err(e) => {
                let first = self.failures.fetch_add(1, Ordering::SeqCst) == 0;
                if first && WARNED.lock().insert(self.oid.clone()) {
                    warn!(
                        "image {}: cannot watch the header ({e}); retrying in the background, \
                         re-reading the header every {UNWATCHED_REFRESH:?} meanwhile",
                        self.name
                    );
                } else {
                    debug!("image {}: header watch still failing: {e}", self.name);
                }
                Err(e)
            }
        }
    }

    /// Waits up to `limit` for the first background attempt to end (set or
    /// refused): other clients see us as a watcher right after an open, as
    /// with librbd (`rbd rm` and our own in-use checks look at watchers),
    /// while a watch that hangs (full pool) holds an open up only `limit`.
    pub fn wait_first_attempt(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while !self.is_set()
            && self.failures.load(Ordering::SeqCst) == 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Makes sure the watch gets set without waiting for it: a background
    /// thread tries until it succeeds or the image is closed.
    pub fn ensure(self: &Arc<Self>) {
        if self.is_set() || self.retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<HeaderWatch> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("rbdfs-watch".into())
            .spawn(move || {
                let mut backoff = RETRY_FIRST;
                loop {
                    let Some(watch) = weak.upgrade() else {
                        return;
                    };
                    if watch.released.load(Ordering::SeqCst) {
                        watch.retrying.store(false, Ordering::SeqCst);
                        return;
                    }
                    if watch.set_now().is_ok() {
                        watch.retrying.store(false, Ordering::SeqCst);
                        return;
                    }
                    drop(watch);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            });
        if let Err(e) = spawned {
            warn!("image {}: cannot start the header watcher: {e}", self.name);
            self.retrying.store(false, Ordering::SeqCst);
        }
    }

    fn callback(&self) -> crate::store::WatchCallback {
        let stale = self.stale.clone();
        let broken = self.broken.clone();
        let name = self.name.clone();
        let lock = self.lock.clone();
        let quiesce_hook = self.quiesce_hook.clone();
        Box::new(move |event: WatchEvent<'_>| match event {
            WatchEvent::Error(e) => {
                warn!(
                    "image {name}: header watch failed ({e}); will re-watch and re-read the header"
                );
                broken.store(true, Ordering::SeqCst);
                stale.store(true, Ordering::SeqCst);
                Vec::new()
            }
            WatchEvent::Notify(payload) => {
                let msg = NotifyMessage::decode(payload).unwrap_or(NotifyMessage::HeaderUpdate);
                debug!("image {name}: notification {msg:?}");
                if matches!(msg, NotifyMessage::HeaderUpdate) {
                    stale.store(true, Ordering::SeqCst);
                }
                if matches!(msg, NotifyMessage::Other(NOTIFY_OP_QUIESCE))
                    && let Some(hook) = quiesce_hook.lock().clone()
                {
                    quiesce(&name, hook);
                }
                match &lock {
                    Some(lock) => lock.handle_notify(&msg),
                    None => Vec::new(),
                }
            }
        })
    }
}
