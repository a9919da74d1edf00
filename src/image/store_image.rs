//! The part of an image that talks to RADOS: header loading and refresh,
//! the header watch, and object-granular reads and writes with the right
//! snap id and snap context, including clone parents (reads fall through
//! to the parent; the first write copies the parent's data up). The cache
//! sits on top of it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use log::{debug, info, warn};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

/// Held while an object write is in flight (see `admit_write`); the flag
/// says the exclusive lock was taken just now.
type WriteAdmission<'a> = (RwLockReadGuard<'a, ()>, bool);

use super::features::{has_object_map, needs_lock};
use super::header::{self, HeaderRef};
use super::info::ImageInfo;
use super::lock::ExclusiveLock;
use super::watch::{HeaderWatch, UNWATCHED_REFRESH};
use crate::cache::ObjectIo;
use crate::error::{ImageError, ImageResult};
use crate::layout::Layout;
use crate::store::{NOSNAP, ObjectStore, SnapId, StoreError};

/// How long opening an image waits for its header watch (see
/// `HeaderWatch::wait_first_attempt`).
const OPEN_WATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Locks that serialise copy-ups of one object.
const COPY_UP_LOCKS: usize = 64;

/// How deep a chain of clone parents may be before we call it a loop.
const MAX_PARENT_DEPTH: u32 = 16;

pub struct StoreImage {
    pub(super) store: Arc<dyn ObjectStore>,
    /// Where the data objects live (the data pool, or `store`).
    data_store: Arc<dyn ObjectStore>,
    header: HeaderRef,
    pub(super) name: String,
    info: RwLock<Arc<ImageInfo>>,
    /// Set by the header watch when another client changed the header, and
    /// when the watch broke (a notification may have been lost).
    stale: Arc<AtomicBool>,
    watch: Arc<HeaderWatch>,
    /// When the header was last read (without a watch it is re-read
    /// after `UNWATCHED_REFRESH`).
    loaded_at: Mutex<Instant>,
    /// The clone's parent, opened at first need.
    parent: Mutex<Option<Arc<StoreImage>>>,
    /// Objects of a clone known to exist in the child (no copy-up needed).
    copied_up: Mutex<HashSet<u64>>,
    /// Serialise copy-ups of the same object (striped by object number).
    copy_up_locks: [Mutex<()>; COPY_UP_LOCKS],
    depth: u32,
    /// Format 2 with exclusive-lock: taken before the first write.
    pub(super) lock: Option<Arc<ExclusiveLock>>,
    /// The watch broke: re-watch (and re-take the lock) at the next refresh.
    watch_broken: Arc<AtomicBool>,
    /// Writes back the cache when another client quiesces the image before
    /// taking a snapshot (`rbd snap create`), as librbd flushes its own.
    quiesce_hook: Arc<Mutex<Option<QuiesceHook>>>,
    /// Drops what the cache holds for the lost client (see `follow_new_client`).
    fence_hook: Mutex<Option<QuiesceHook>>,
    /// The store's client generation our watch and lock were made with
    /// (see `ObjectStore::generation`).
    generation: AtomicU64,
}

/// See `StoreImage::set_quiesce_hook`.
pub type QuiesceHook = Arc<dyn Fn() + Send + Sync>;

/// How long a quiesce request may wait for our write-back: `rbd snap
/// create` fails if a watcher does not answer in time, so past this the
/// snapshot goes ahead without what is still being written.
const QUIESCE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl StoreImage {
    /// Unwatches the header for good (see `HeaderWatch::release`).
    pub fn release_watch(&self) {
        self.watch.release();
    }

    /// Opens image `name` of this pool (format 2 or 1).
    pub fn open(store: Arc<dyn ObjectStore>, name: &str) -> ImageResult<StoreImage> {
        let header = header::resolve(&*store, name)?;
        Self::open_ref(store, header, 0)
    }

    fn open_ref(
        store: Arc<dyn ObjectStore>,
        header: HeaderRef,
        depth: u32,
    ) -> ImageResult<StoreImage> {
        let name = header.name().to_string();
        let info = header::load(&*store, &header)?;
        let data_store = match info.data_pool {
            Some(pool) => store.pool_by_id(pool).map_err(|e| ImageError::Store {
                image: name.clone(),
                source: e,
            })?,
            None => store.clone(),
        };
        // A parent is only read: it never takes the lock. Any format-2 image
        // gets one, used while the exclusive-lock feature is on (it may be
        // enabled later with `rbd feature enable`).
        let lock = (depth == 0 && info.format == 2).then(|| {
            Arc::new(ExclusiveLock::new(
                store.clone(),
                &name,
                &info.header_oid,
                info.id.as_deref().unwrap_or_default(),
                has_object_map(info.features),
            ))
        });
        let stale = Arc::new(AtomicBool::new(false));
        let watch_broken = Arc::new(AtomicBool::new(false));
        let quiesce_hook = Arc::new(Mutex::new(None));
        let watch = Arc::new(HeaderWatch::new(
            store.clone(),
            header.header_oid(),
            name.clone(),
            stale.clone(),
            watch_broken.clone(),
            lock.clone(),
            quiesce_hook.clone(),
        ));
        let generation = AtomicU64::new(store.generation());
        let core = StoreImage {
            generation,
            store,
            data_store,
            header,
            name,
            info: RwLock::new(Arc::new(info)),
            stale,
            watch,
            loaded_at: Mutex::new(Instant::now()),
            parent: Mutex::new(None),
            copied_up: Mutex::new(HashSet::new()),
            copy_up_locks: std::array::from_fn(|_| Mutex::new(())),
            depth,
            lock,
            watch_broken,
            quiesce_hook,
            fence_hook: Mutex::new(None),
        };
        core.watch.ensure();
        core.watch.wait_first_attempt(OPEN_WATCH_WAIT);
        Ok(core)
    }

    pub(super) fn data_store(&self) -> &Arc<dyn ObjectStore> {
        &self.data_store
    }

    pub fn info(&self) -> Arc<ImageInfo> {
        self.info.read().clone()
    }

    pub(super) fn header_oid(&self) -> String {
        self.header.header_oid()
    }

    /// What to run (write back the cache) when another client quiesces the
    /// image before a snapshot.
    /// What to run when the store replaced a lost (blocklisted) client:
    /// drop the dirty data that client acknowledged.
    pub(super) fn set_fence_hook(&self, hook: QuiesceHook) {
        *self.fence_hook.lock() = Some(hook);
    }

    pub(super) fn set_quiesce_hook(&self, hook: QuiesceHook) {
        *self.quiesce_hook.lock() = Some(hook);
    }

    /// Re-reads the header now.
    pub fn refresh(&self) -> ImageResult<Arc<ImageInfo>> {
        // Clear first: a notification that arrives while we read is then
        // not lost, it just causes one more refresh.
        self.stale.store(false, Ordering::SeqCst);
        self.follow_new_client();
        let info = Arc::new(header::load(&*self.store, &self.header)?);
        // The load itself may have met the blocklist and reconnected.
        self.follow_new_client();
        *self.loaded_at.lock() = Instant::now();
        let old = std::mem::replace(&mut *self.info.write(), info.clone());
        if let Some(lock) = &self.lock {
            lock.set_object_map(has_object_map(info.features))?;
        }
        if old.parent != info.parent {
            // Flattened or re-parented: forget what we knew.
            *self.parent.lock() = None;
            self.copied_up.lock().clear();
        }
        if self.watch_broken.swap(false, Ordering::SeqCst) {
            // Our lock cookie names the old watch handle; peers would take
            // us for dead. Give the lock back and watch afresh.
            if let Some(Err(e)) = self.lock.as_ref().map(|l| l.release()) {
                warn!(
                    "image {}: releasing the lock after a watch error: {e}",
                    self.name
                );
            }
            self.watch.drop_broken();
        }
        self.watch.ensure();
        Ok(info)
    }

    /// After the store replaced a lost RADOS client: the watch and the lock
    /// of the old one are gone; set a new watch, take the lock again at the
    /// next write.
    fn follow_new_client(&self) {
        let now = self.store.generation();
        if self.generation.swap(now, Ordering::SeqCst) == now {
            return;
        }
        info!(
            "image {}: serving through the new RADOS client; re-watching the header",
            self.name
        );
        if let Some(lock) = &self.lock {
            lock.forget_lost();
        }
        self.watch_broken.store(false, Ordering::SeqCst);
        self.watch.abandon();
        // The lost client's lock was broken: what it acknowledged and did
        // not write back is fenced off, never written by the new client.
        if let Some(fence) = self.fence_hook.lock().clone() {
            fence();
        }
    }

    /// The watch handle the exclusive lock's cookie must name, setting the
    /// watch now if the background has not managed yet (the caller is about
    /// to write, so waiting for a write-class operation is fine). None when
    /// we may not watch (a read-only CephX user): the lock then refuses
    /// writes as read-only. Other failures (full pool: EDQUOT/ENOSPC) are
    /// the caller's error.
    pub(super) fn watch_cookie_for_lock(&self) -> ImageResult<Option<u64>> {
        if let Some(cookie) = self.watch.cookie() {
            return Ok(Some(cookie));
        }
        match self.watch.set_now() {
            Ok(cookie) => Ok(Some(cookie)),
            Err(e) if matches!(e.errno(), libc::EPERM | libc::EACCES) => Ok(None),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// The header, re-read first if it may have changed: a notification
    /// said so, or there is no watch and our copy is older than
    /// `UNWATCHED_REFRESH`.
    pub fn current_info(&self) -> ImageResult<Arc<ImageInfo>> {
        let unwatched_and_old =
            || !self.watch.is_set() && self.loaded_at.lock().elapsed() >= UNWATCHED_REFRESH;
        let new_client = || self.store.generation() != self.generation.load(Ordering::SeqCst);
        if self.stale.load(Ordering::SeqCst) || unwatched_and_old() || new_client() {
            self.refresh()
        } else {
            Ok(self.info())
        }
    }

    pub(super) fn store_err(&self, source: StoreError) -> ImageError {
        ImageError::Store {
            image: self.name.clone(),
            source,
        }
    }

    /// Tells other clients (librbd, krbd) that the header changed.
    pub(super) fn notify_header_update(&self) {
        if let Err(e) = self.store.notify(&self.header_oid(), &[], 5000) {
            debug!("image {}: header notify failed: {e}", self.name);
        }
    }

    /// The clone's parent image, opened on first use.
    fn parent_image(&self, info: &ImageInfo) -> ImageResult<Option<Arc<StoreImage>>> {
        let Some(parent) = &info.parent else {
            return Ok(None);
        };
        let mut slot = self.parent.lock();
        if let Some(p) = slot.as_ref() {
            return Ok(Some(p.clone()));
        }
        if self.depth >= MAX_PARENT_DEPTH {
            return Err(ImageError::Unsupported {
                image: self.name.clone(),
                reason: format!("parent {:?} is too deep a chain", parent.spec),
            });
        }
        // The parent may be in any pool and namespace (the spec says which).
        let store = self
            .store
            .pool_in_namespace(parent.spec.pool_id, &parent.spec.pool_namespace)
            .map_err(|e| self.store_err(e))?;
        let header = HeaderRef::V2 {
            name: format!("{} (parent of {})", parent.spec.image_id, self.name),
            id: parent.spec.image_id.clone(),
        };
        let image = Arc::new(StoreImage::open_ref(store, header, self.depth + 1)?);
        *slot = Some(image.clone());
        Ok(Some(image))
    }

    /// Reads an image range at `snap` straight from RADOS (no cache): used
    /// for a child's reads that fall through to this parent.
    fn read_range(&self, snap: SnapId, offset: u64, len: u64) -> ImageResult<Vec<u8>> {
        let info = self.current_info()?;
        let size = info.size_at(snap).unwrap_or(0);
        let mut out = vec![0u8; len as usize];
        if offset >= size {
            return Ok(out);
        }
        let len = len.min(size - offset);
        for e in info.layout.map(offset, len) {
            let data = self.read_object(snap, e.object_no, e.offset, e.len)?;
            out[e.buf_offset as usize..(e.buf_offset + e.len) as usize].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// The parent's bytes for `[offset, offset+len)` of object `object_no`
    /// of this clone as of `snap` (zeros beyond the overlap), or None when
    /// no part of it comes from a parent.
    fn parent_data(
        &self,
        info: &ImageInfo,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> ImageResult<Option<Vec<u8>>> {
        let Some(parent_info) = &info.parent else {
            return Ok(None);
        };
        let overlap = parent_info.overlap_at(snap);
        let pieces: Vec<_> = info
            .layout
            .unmap(object_no, offset, len)
            .into_iter()
            .filter(|(image_off, _, _)| *image_off < overlap)
            .collect();
        if pieces.is_empty() {
            return Ok(None);
        }
        let Some(parent) = self.parent_image(info)? else {
            return Ok(None);
        };
        let mut out = vec![0u8; len as usize];
        for (image_off, n, obj_off) in pieces {
            let n = n.min(overlap - image_off);
            let data = parent.read_range(parent_info.spec.snap_id, image_off, n)?;
            let at = (obj_off - offset) as usize;
            out[at..at + n as usize].copy_from_slice(&data);
        }
        Ok(Some(out))
    }
}

impl ObjectIo for StoreImage {
    fn read_object(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> ImageResult<Vec<u8>> {
        let info = self.current_info()?;
        let oid = info.data_object(object_no);
        let mut out = match self.data_store.read(&oid, offset, len as usize, snap) {
            Ok(data) => data,
            Err(err) if err.is_not_found() => {
                // A clone's object that was never written shows the parent.
                if let Some(data) = self.parent_data(&info, snap, object_no, offset, len)? {
                    return Ok(data);
                }
                Vec::new()
            }
            Err(err) => return Err(self.store_err(err)),
        };
        out.resize(len as usize, 0);
        Ok(out)
    }

    fn write_object(&self, object_no: u64, offset: u64, data: &[u8]) -> ImageResult<()> {
        let (info, _admitted) = self.admit_write(object_no)?;
        let oid = info.data_object(object_no);
        if info.parent.is_some() && !self.copied_up.lock().contains(&object_no) {
            // One copy-up per object at a time: with striping, one request
            // brings several extents of the same object, and two copy-ups
            // racing would each write the parent's bytes over the other's.
            let _serial = self.copy_up_locks[(object_no % COPY_UP_LOCKS as u64) as usize].lock();
            if !self.copied_up.lock().contains(&object_no) {
                return self.copy_up(&info, object_no, &oid, offset, data);
            }
        }
        self.data_store
            .write(&oid, offset, data, &info.snapc)
            .map_err(|e| self.store_err(e))
    }

    fn write_object_extents(&self, object_no: u64, extents: &[(u64, &[u8])]) -> ImageResult<()> {
        if self.info().parent.is_some() && !self.copied_up.lock().contains(&object_no) {
            // A clone's object that still needs its copy-up: extent by extent.
            return extents
                .iter()
                .try_for_each(|&(offset, data)| self.write_object(object_no, offset, data));
        }
        let (info, _admitted) = self.admit_write(object_no)?;
        let oid = info.data_object(object_no);
        self.data_store
            .write_extents(&oid, extents, &info.snapc)
            .map_err(|e| self.store_err(e))
    }

    fn cache_head(&self) -> bool {
        // Without the exclusive lock, another client may be writing.
        match &self.lock {
            Some(lock) if needs_lock(self.info().features) => lock.is_owner(),
            _ => true,
        }
    }

    fn layout(&self) -> Layout {
        self.info().layout
    }

    fn size_at(&self, snap: SnapId) -> Option<u64> {
        self.info().size_at(snap)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Runs the quiesce hook on its own thread (it may need the exclusive
/// lock, whose notifications this watch thread must stay free to answer)
/// and waits for it at most `QUIESCE_WAIT`.
pub(super) fn quiesce(name: &str, hook: QuiesceHook) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("rbdfs-quiesce".into())
        .spawn(move || {
            hook();
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(_) => {
            if done_rx.recv_timeout(QUIESCE_WAIT).is_err() {
                warn!(
                    "image {name}: write-back for another client's snapshot still running after \
                     {QUIESCE_WAIT:?}; the snapshot may miss it"
                );
            }
        }
        Err(e) => warn!("image {name}: cannot write back for a snapshot: {e}"),
    }
}

impl StoreImage {
    /// Everything an object write needs before it goes out: the newest
    /// header (a write must never carry an older snap context than the
    /// snapshots that exist, or the OSD skips preserving them), a writable
    /// image, and the exclusive lock where the image has one. The guard
    /// must be held until the write is done, so a lock handover waits.
    fn admit_write(
        &self,
        object_no: u64,
    ) -> ImageResult<(Arc<ImageInfo>, Option<WriteAdmission<'_>>)> {
        let generation = self.generation.load(Ordering::SeqCst);
        let info = self.current_info()?;
        if self.generation.load(Ordering::SeqCst) != generation {
            // This write carries data the lost client acknowledged.
            return Err(self.store_err(StoreError::Errno {
                op: "write-back after the RADOS client was replaced",
                oid: self.name.clone(),
                errno: libc::EIO,
            }));
        }
        if let Some(reason) = &info.read_only {
            return Err(ImageError::ReadOnly {
                image: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let admission = match &self.lock {
            Some(lock) if needs_lock(info.features) => {
                Some(lock.write_guard(self.watch_cookie_for_lock()?, object_no)?)
            }
            _ => None,
        };
        let info = match &admission {
            // The previous owner may have changed the header (snapshots!).
            Some((_, true)) => self.refresh()?,
            _ => info,
        };
        Ok((info, admission))
    }

    /// First write to a clone's object that still shows the parent: write
    /// the parent's bytes for the whole object with ours on top, in one
    /// write, so the object never holds a mix of zeros and new data.
    fn copy_up(
        &self,
        info: &ImageInfo,
        object_no: u64,
        oid: &str,
        offset: u64,
        data: &[u8],
    ) -> ImageResult<()> {
        let exists = match self.data_store.stat(oid, NOSNAP) {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(self.store_err(e)),
        };
        let object_size = info.layout.object_size;
        let parent = if exists {
            None
        } else {
            self.parent_data(info, NOSNAP, object_no, 0, object_size)?
        };
        let result = match parent {
            Some(mut whole) => {
                // Trailing zeros need not be stored.
                let end = (offset as usize + data.len())
                    .max(whole.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1));
                whole[offset as usize..offset as usize + data.len()].copy_from_slice(data);
                whole.truncate(end);
                debug!("image {}: copy-up of object {object_no}", self.name);
                self.data_store.write(oid, 0, &whole, &info.snapc)
            }
            None => self.data_store.write(oid, offset, data, &info.snapc),
        };
        result.map_err(|e| self.store_err(e))?;
        self.copied_up.lock().insert(object_no);
        Ok(())
    }
}
