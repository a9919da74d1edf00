//! The exclusive lock of a format-2 image, spoken the way librbd speaks it
//! (see `exclusive-lock.md`): a `lock`-class lock `rbd_lock` on the header
//! with tag `internal` and cookie `auto <watch handle>`, announced and
//! handed over through notifications on the header. While we hold it we
//! also own the head's object map ([`HeadObjectMap`]) and keep it true for
//! every object we write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};

use super::object_map::HeadObjectMap;
use crate::error::{ImageError, ImageResult};
use crate::format::v2::*;
use crate::store::{ObjectStore, StoreError};

/// How long we wait for another owner to hand the lock over.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// After handing the lock over on request, how long we wait before asking
/// for it back.
const HANDOVER_GRACE: Duration = Duration::from_millis(500);
/// How long a notification waits for the watchers' answers.
const NOTIFY_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Unlocked,
    /// Held with this cookie.
    Locked(String),
    /// Handing it over: no new object writes until this is done.
    Releasing,
}

/// What the image's cache does around a lock handover.
pub trait HandoverHooks: Send + Sync {
    /// Before the lock goes: every acknowledged write goes to RADOS. A
    /// failure is logged here and stays recorded for the next fsync.
    fn before_release(&self) -> ImageResult<()>;
    /// After it went: another client may write now, so clean data we hold
    /// of the head can go stale and is dropped.
    fn after_release(&self);
    /// Once it is ours, before we say so: what we read of the head while
    /// another client could write (read-ahead) is dropped.
    fn before_owning(&self);
}

pub struct ExclusiveLock {
    store: Arc<dyn ObjectStore>,
    image: String,
    header_oid: String,
    state: Mutex<State>,
    changed: Condvar,
    /// Object writes in flight hold it shared; a release takes it
    /// exclusively, so nothing is written after we unlock.
    in_flight: RwLock<()>,
    /// One acquirer at a time.
    acquiring: Mutex<()>,
    /// The head's object map, loaded while we own the lock.
    object_map: HeadObjectMap,
    hooks: Mutex<Option<Box<dyn HandoverHooks>>>,
    /// When we last released the lock because another client asked.
    handed_over_at: Mutex<Option<Instant>>,
}

impl ExclusiveLock {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        image: &str,
        header_oid: &str,
        image_id: &str,
        with_object_map: bool,
    ) -> Self {
        let object_map = HeadObjectMap::new(store.clone(), image, image_id, with_object_map);
        ExclusiveLock {
            store,
            image: image.to_string(),
            header_oid: header_oid.to_string(),
            state: Mutex::new(State::Unlocked),
            changed: Condvar::new(),
            in_flight: RwLock::new(()),
            acquiring: Mutex::new(()),
            object_map,
            hooks: Mutex::new(None),
            handed_over_at: Mutex::new(None),
        }
    }

    pub fn set_hooks(&self, hooks: Box<dyn HandoverHooks>) {
        *self.hooks.lock() = Some(hooks);
    }

    /// Follows a feature change seen at refresh: with object-map newly
    /// enabled while we own the lock, load the map now.
    pub fn set_object_map(&self, enabled: bool) -> ImageResult<()> {
        let was = self.object_map.set_enabled(enabled);
        if enabled && !was && self.is_owner() {
            self.object_map.load()?;
        }
        Ok(())
    }

    pub fn is_owner(&self) -> bool {
        matches!(*self.state.lock(), State::Locked(_))
    }

    fn err(&self, op: &'static str, e: StoreError) -> ImageError {
        let _ = op;
        ImageError::Store {
            image: self.image.clone(),
            source: e,
        }
    }

    fn client_id(&self, handle: u64) -> ClientId {
        ClientId {
            gid: self.store.instance_id(),
            handle,
        }
    }

    /// Admits an object write of `object_no` under the lock, taking it
    /// first if needed; `handle` is our current watch handle (the cookie).
    /// The write must finish before the guard is dropped. The flag says the
    /// lock was (re)taken meanwhile: the caller re-reads the header, since
    /// the previous owner may have changed it.
    pub fn write_guard(
        &self,
        handle: Option<u64>,
        object_no: u64,
    ) -> ImageResult<(RwLockReadGuard<'_, ()>, bool)> {
        let (guard, acquired) = self.owned_guard(handle)?;
        self.mark_exists(object_no)?;
        Ok((guard, acquired))
    }

    /// Holds the lock (taking it if needed) until the guard is dropped; a
    /// handover requested meanwhile waits for it.
    pub fn owned_guard(&self, handle: Option<u64>) -> ImageResult<(RwLockReadGuard<'_, ()>, bool)> {
        let deadline = Instant::now() + ACQUIRE_TIMEOUT;
        let mut acquired = false;
        loop {
            let guard = self.in_flight.read();
            let state = self.state.lock().clone();
            match state {
                State::Locked(_) => return Ok((guard, acquired)),
                State::Releasing => {
                    drop(guard);
                    let mut st = self.state.lock();
                    if *st == State::Releasing {
                        self.changed.wait_for(&mut st, Duration::from_millis(200));
                    }
                }
                State::Unlocked => {
                    drop(guard);
                    let Some(handle) = handle else {
                        return Err(ImageError::ReadOnly {
                            image: self.image.clone(),
                            reason: "no header watch, so the exclusive lock cannot be taken".into(),
                        });
                    };
                    self.acquire(handle, deadline)?;
                    acquired = true;
                }
            }
        }
    }

    /// Takes the lock as librbd does: try; if another client holds it, ask
    /// it to release (request-lock) and retry; if its watch is gone, it is
    /// dead: blocklist it and break its lock.
    fn acquire(&self, handle: u64, deadline: Instant) -> ImageResult<()> {
        let _one = self.acquiring.lock();
        if matches!(*self.state.lock(), State::Locked(_)) {
            return Ok(());
        }
        // We just gave the lock to a client that asked for it: let it take
        // it and do some work before we ask it back, or the two of us pass
        // the lock back and forth without the other ever writing.
        let handed_over = *self.handed_over_at.lock();
        if let Some(at) = handed_over {
            let wait = HANDOVER_GRACE.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let cookie = rbd_lock_cookie(handle);
        let me = self.client_id(handle);
        let mut asked = false;
        loop {
            let op = LockOp::rbd_exclusive(&cookie);
            match self
                .store
                .exec(&self.header_oid, LOCK_CLASS, "lock", &op.encode())
            {
                Ok(_) => break,
                Err(e) if e.errno() == libc::EBUSY || e.errno() == libc::EEXIST => {}
                Err(e) => return Err(self.err("lock", e)),
            }
            let owner = self.current_owner()?;
            let Some(owner) = owner else {
                continue; // released meanwhile: try again at once
            };
            if owner.entity_num as u64 == me.gid && owner.cookie == cookie {
                break; // ours already (an earlier attempt got through)
            }
            let Some(owner_handle) = parse_rbd_lock_cookie(&owner.cookie) else {
                return Err(ImageError::ReadOnly {
                    image: self.image.clone(),
                    reason: format!(
                        "locked by {} with a foreign lock (cookie {:?})",
                        owner.entity(),
                        owner.cookie
                    ),
                });
            };
            if Instant::now() > deadline {
                return Err(ImageError::Store {
                    image: self.image.clone(),
                    source: StoreError::Errno {
                        op: "acquire exclusive lock",
                        oid: self.header_oid.clone(),
                        errno: libc::ETIMEDOUT,
                    },
                });
            }
            let request = NotifyMessage::RequestLock {
                client: me,
                force: false,
            }
            .encode();
            let replies = self
                .store
                .notify(&self.header_oid, &request, NOTIFY_TIMEOUT_MS)
                .map_err(|e| self.err("notify", e))?;
            let owner_gid = owner.entity_num as u64;
            let answer = replies.acks.iter().find(|(gid, cookie, payload)| {
                *gid == owner_gid && *cookie == owner_handle && !payload.is_empty()
            });
            match answer {
                Some((_, _, payload)) => {
                    let r = decode_response_message(payload).unwrap_or(0);
                    if r != 0 && r != -libc::EAGAIN {
                        return Err(ImageError::ReadOnly {
                            image: self.image.clone(),
                            reason: format!(
                                "the lock owner {} refused to release it ({r})",
                                owner.entity()
                            ),
                        });
                    }
                    if !asked {
                        info!(
                            "image {}: asked {} to hand over the exclusive lock",
                            self.image,
                            owner.entity()
                        );
                        asked = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                None if replies
                    .acks
                    .iter()
                    .any(|(gid, cookie, _)| *gid == owner_gid && *cookie == owner_handle) =>
                {
                    // It acked without an answer: not (yet) the owner in
                    // its own eyes; give it a moment.
                    std::thread::sleep(Duration::from_millis(100));
                }
                None => self.break_dead_owner(&owner)?,
            }
        }
        // The map first: a writer that sees "locked" must find it loaded.
        if self.object_map.is_enabled()
            && let Err(e) = self.object_map.load()
        {
            // Without a map we cannot keep it true: give the lock back.
            let _ = self.store.exec(
                &self.header_oid,
                LOCK_CLASS,
                "unlock",
                &unlock_input(RBD_LOCK_NAME, &cookie),
            );
            return Err(e);
        }
        if let Some(hooks) = self.hooks.lock().as_ref() {
            hooks.before_owning();
        }
        *self.state.lock() = State::Locked(cookie);
        self.changed.notify_all();
        info!("image {}: acquired the exclusive lock", self.image);
        let acquired = NotifyMessage::AcquiredLock(me).encode();
        if let Err(e) = self
            .store
            .notify(&self.header_oid, &acquired, NOTIFY_TIMEOUT_MS)
        {
            debug!("image {}: acquired-lock notify: {e}", self.image);
        }
        Ok(())
    }

    fn current_owner(&self) -> ImageResult<Option<Locker>> {
        let reply = match self.store.exec(
            &self.header_oid,
            LOCK_CLASS,
            "get_info",
            &get_info_input(RBD_LOCK_NAME),
        ) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(self.err("get_info", e)),
        };
        let info = LockInfo::decode(&reply).map_err(|source| ImageError::Corrupt {
            image: self.image.clone(),
            source,
        })?;
        if !info.lockers.is_empty() && info.tag != RBD_LOCK_TAG {
            return Err(ImageError::ReadOnly {
                image: self.image.clone(),
                reason: format!("locked with foreign tag {:?}", info.tag),
            });
        }
        Ok(info.lockers.into_iter().next())
    }

    /// The owner did not answer our request and its watch is gone: it died
    /// holding the lock. Blocklist it first, so it cannot write after we
    /// take over, then break its lock.
    fn break_dead_owner(&self, owner: &Locker) -> ImageResult<()> {
        warn!(
            "image {}: lock owner {} ({}) does not answer; blocklisting it and breaking its lock",
            self.image,
            owner.entity(),
            owner.address
        );
        let addr = owner.addr.legacy_str();
        if let Err(e) = self.store.blocklist_add(&addr, 0) {
            warn!("image {}: blocklisting {addr} failed: {e}", self.image);
            return Err(self.err("blocklist", e));
        }
        let input = break_lock_input(RBD_LOCK_NAME, owner.entity(), &owner.cookie);
        match self
            .store
            .exec(&self.header_oid, LOCK_CLASS, "break_lock", &input)
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(self.err("break_lock", e)),
        }
    }

    /// Hands the lock back: flush what is dirty, wait for writes in flight,
    /// unlock, and tell the others.
    pub fn release(&self) -> ImageResult<()> {
        let cookie = match &*self.state.lock() {
            State::Locked(c) => c.clone(),
            _ => return Ok(()),
        };
        if let Some(Err(e)) = self.hooks.lock().as_ref().map(|h| h.before_release()) {
            warn!(
                "image {}: flush before releasing the lock failed: {e}",
                self.image
            );
        }
        *self.state.lock() = State::Releasing;
        let quiesced = self.in_flight.write();
        self.object_map.forget();
        let result = self.store.exec(
            &self.header_oid,
            LOCK_CLASS,
            "unlock",
            &unlock_input(RBD_LOCK_NAME, &cookie),
        );
        *self.state.lock() = State::Unlocked;
        if let Some(hooks) = self.hooks.lock().as_ref() {
            hooks.after_release();
        }
        // The grace before asking the lock back runs from here: a release
        // that flushed a lot must not eat it.
        if self.handed_over_at.lock().is_some() {
            *self.handed_over_at.lock() = Some(Instant::now());
        }
        drop(quiesced);
        self.changed.notify_all();
        if let Some(handle) = parse_rbd_lock_cookie(&cookie) {
            let released = NotifyMessage::ReleasedLock(self.client_id(handle)).encode();
            if let Err(e) = self
                .store
                .notify(&self.header_oid, &released, NOTIFY_TIMEOUT_MS)
            {
                debug!("image {}: released-lock notify: {e}", self.image);
            }
        }
        info!("image {}: released the exclusive lock", self.image);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(self.err("unlock", e)),
        }
    }

    /// Our RADOS client was replaced (the old one was blocklisted): the
    /// lock it held is not ours any more (another client broke it, or it
    /// names a dead client and will be broken), so forget it without
    /// asking RADOS. The next write takes it again, as a new client would.
    pub fn forget_lost(&self) {
        let was = std::mem::replace(&mut *self.state.lock(), State::Unlocked);
        self.object_map.forget();
        if let Some(hooks) = self.hooks.lock().as_ref() {
            hooks.after_release();
        }
        self.changed.notify_all();
        if matches!(was, State::Locked(_)) {
            warn!(
                "image {}: the exclusive lock was held by the lost client; \
                 taking it again at the next write",
                self.image
            );
        }
    }

    /// Answers a notification on the header; returns the ack payload. A
    /// request for the lock while we hold it is granted (released on a
    /// separate thread: the watch callback must not block on I/O).
    pub fn handle_notify(self: &Arc<Self>, msg: &NotifyMessage) -> Vec<u8> {
        let owner = self.is_owner();
        match msg {
            NotifyMessage::RequestLock { .. } if owner => {
                let me = self.clone();
                *self.handed_over_at.lock() = Some(Instant::now());
                std::thread::spawn(move || {
                    if let Err(e) = me.release() {
                        warn!("image {}: releasing the lock on request: {e}", me.image);
                    }
                });
                response_message(0)
            }
            // librbd quiesces every watcher around `rbd snap create`; an
            // error here would fail the snapshot. Our writes are safe
            // without it: the owner hands the lock over (flushing) first.
            NotifyMessage::Other(NOTIFY_OP_QUIESCE | NOTIFY_OP_UNQUIESCE) => response_message(0),
            NotifyMessage::Other(_) if owner => response_message(-libc::EOPNOTSUPP),
            _ => Vec::new(),
        }
    }

    /// After snapshot `snap_id` was added: see
    /// [`HeadObjectMap::snapshot`]. Needs the lock.
    pub fn snapshot_object_map(&self, snap_id: u64, fast_diff: bool) -> ImageResult<()> {
        self.object_map.snapshot(snap_id, fast_diff)
    }

    /// Before snapshot `snap_id` goes: see
    /// [`HeadObjectMap::remove_snapshot`].
    pub fn remove_snapshot_object_map(
        &self,
        snap_id: u64,
        next: Option<u64>,
        fast_diff: bool,
    ) -> ImageResult<()> {
        self.object_map.remove_snapshot(snap_id, next, fast_diff)
    }

    /// Re-reads the head's object map if we hold the lock (after a resize
    /// changed it on the OSD).
    pub fn reload_object_map(&self) -> ImageResult<()> {
        if self.is_owner() && self.object_map.is_enabled() {
            self.object_map.load()?;
        }
        Ok(())
    }

    /// After the image grew: see [`HeadObjectMap::grow`].
    pub fn grow_object_map(&self, object_count: u64) {
        self.object_map.grow(object_count)
    }

    /// Before writing object `object_no`, the object map must say it
    /// exists (librbd's order: map first, then data).
    fn mark_exists(&self, object_no: u64) -> ImageResult<()> {
        self.object_map.set_state(object_no, ObjectState::Exists)
    }

    /// Object `object_no`'s state in the head's object map, if we hold it.
    pub fn object_state(&self, object_no: u64) -> Option<ObjectState> {
        self.object_map.state(object_no)
    }

    /// Sets object `object_no`'s state in the head's object map (see
    /// [`HeadObjectMap::set_state`]). Call with the lock held.
    pub fn set_object_state(&self, object_no: u64, state: ObjectState) -> ImageResult<()> {
        self.object_map.set_state(object_no, state)
    }
}
