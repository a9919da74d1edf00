//! One open RBD image: reads at the head or a snapshot, writes with the
//! image's snap context, flush, and snapshot create/remove. Byte ranges
//! become object extents through the image's [`Layout`](crate::layout::Layout),
//! and object I/O goes through the [cache](crate::cache) to [`StoreImage`].

pub mod admin;
mod diff;
pub mod features;
mod header;
mod info;
mod lock;
mod object_map;
mod sparse;
mod store_image;
#[cfg(test)]
pub(crate) mod tests;
mod watch;

use std::sync::Arc;

use log::{debug, info, warn};
use parking_lot::RwLock;

pub use self::diff::{DiffMethod, DiffPlan};
pub use self::header::HeaderRef;
pub use self::info::{ImageInfo, ParentInfo};
pub use self::sparse::Seek;
pub use self::store_image::StoreImage;
use crate::cache::{Cache, CachedBytes, ImageCache};
pub use crate::error::{ImageError, ImageResult};
use crate::format::decode::Encoder;
use crate::format::v2;
use crate::format::{MAX_NAME_LEN, SnapshotInfo};
use crate::layout::ObjectExtent;
use crate::store::{ObjectStore, SnapId, StoreError};

/// The bytes of a read: the cache's own buffer where it held them all,
/// else a buffer of their own.
pub enum ReadData {
    Owned(Vec<u8>),
    Cached(CachedBytes),
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Cached(b) => b,
        }
    }
}

/// Only the length: the bytes can be megabytes.
impl std::fmt::Debug for ReadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadData")
            .field("len", &self.len())
            .finish()
    }
}

impl ReadData {
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Cached(b) => b.to_vec(),
        }
    }
}

pub struct Image {
    store_image: Arc<StoreImage>,
    cache: ImageCache,
    /// Writes hold it shared; snapshot creation holds it exclusively so no
    /// write is in flight (or dirty in the cache) while the snap context
    /// changes.
    io_gate: RwLock<()>,
    /// `allocated()` answers, with when they were computed.
    allocated_cache:
        parking_lot::Mutex<std::collections::HashMap<SnapId, (std::time::Instant, u64)>>,
    /// Diff streams laid out so far (snapshots never change).
    diff_plans: parking_lot::Mutex<std::collections::HashMap<diff::PlanKey, Arc<DiffPlan>>>,
    /// Whether our CephX user may write the data pool, once known (see
    /// `check_may_write`).
    may_write: std::sync::OnceLock<bool>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.store_image.name)
            .finish()
    }
}

/// Around a lock handover: what we acknowledged goes out before, and
/// what we cached of the head is forgotten after (others write now); and
/// when we take the lock, read-ahead made while others could write goes.
struct CacheHandover(std::sync::Weak<Image>);

impl lock::HandoverHooks for CacheHandover {
    fn before_release(&self) -> ImageResult<()> {
        match self.0.upgrade() {
            Some(image) => image.persist_acknowledged(),
            None => Ok(()),
        }
    }

    fn after_release(&self) {
        if let Some(image) = self.0.upgrade() {
            image.cache.invalidate();
        }
    }

    fn before_owning(&self) {
        self.after_release()
    }
}

impl Image {
    pub fn open(
        store: Arc<dyn ObjectStore>,
        cache: &Arc<Cache>,
        name: &str,
    ) -> ImageResult<Arc<Image>> {
        let store_image = Arc::new(StoreImage::open(store, name)?);
        let cache = cache.for_image(store_image.clone());
        let image = Arc::new(Image {
            store_image,
            cache,
            io_gate: RwLock::new(()),
            allocated_cache: Default::default(),
            diff_plans: Default::default(),
            may_write: std::sync::OnceLock::new(),
        });
        if let Some(lock) = &image.store_image.lock {
            lock.set_hooks(Box::new(CacheHandover(Arc::downgrade(&image))));
        }
        // Blocklisted and replaced by a new client: what the old one
        // acknowledged is not ours to write any more.
        let weak = Arc::downgrade(&image);
        image.store_image.set_fence_hook(Arc::new(move || {
            if let Some(image) = weak.upgrade() {
                let e = ImageError::Store {
                    image: image.name().to_string(),
                    source: StoreError::Errno {
                        op: "write-back (the RADOS client was blocklisted)",
                        oid: image.name().to_string(),
                        errno: libc::EIO,
                    },
                };
                image.cache.drop_dirty(e);
            }
        }));
        // Another client's `rbd snap create` quiesces us first: what we
        // acknowledged goes into its snapshot, as librbd's cache would.
        let weak = Arc::downgrade(&image);
        image.store_image.set_quiesce_hook(Arc::new(move || {
            if let Some(image) = weak.upgrade()
                && let Err(e) = image.persist_acknowledged()
            {
                warn!("image {}: write-back for a snapshot: {e}", image.name());
            }
        }));
        Ok(image)
    }

    /// The next data (or hole) at or after `offset` at `snap`; None means
    /// ENXIO (at/after the end, or no more data).
    pub fn seek(&self, snap: SnapId, offset: u64, what: Seek) -> ImageResult<Option<u64>> {
        if snap == crate::store::NOSNAP {
            // Dirty data makes objects exist once written back.
            self.persist_acknowledged()?;
        }
        let info = self.current_info()?;
        sparse::seek(&self.store_image, &info, snap, offset, what)
    }

    /// Bytes the image's objects hold at `snap` (for `st_blocks`).
    /// Remembered for a few seconds (a snapshot's for good): `ls -l` of a
    /// big image without an object map would otherwise stat every object.
    pub fn allocated(&self, snap: SnapId) -> ImageResult<u64> {
        const FRESH: std::time::Duration = std::time::Duration::from_secs(5);
        if let Some(&(at, bytes)) = self.allocated_cache.lock().get(&snap)
            && (snap != crate::store::NOSNAP || at.elapsed() < FRESH)
        {
            return Ok(bytes);
        }
        let info = self.current_info()?;
        let bytes = sparse::allocated(&self.store_image, &info, snap)?;
        self.allocated_cache
            .lock()
            .insert(snap, (std::time::Instant::now(), bytes));
        Ok(bytes)
    }

    /// Discards `[offset, offset+len)` of the head (clipped at the end):
    /// afterwards it reads as zeros and, where whole objects were covered,
    /// takes no space.
    pub fn discard(&self, offset: u64, len: u64) -> ImageResult<()> {
        let _gate = self.io_gate.read();
        let info = self.current_info()?;
        self.check_writable(&info)?;
        if offset >= info.size {
            return Ok(());
        }
        let len = len.min(info.size - offset);
        // Dirty data in the range must not land after the discard.
        self.persist_acknowledged()?;
        let extents = info.layout.map(offset, len);
        let result = self.in_parallel(extents.iter().collect(), |e: &ObjectExtent| {
            self.store_image
                .discard_object(e.object_no, e.offset, e.len)
        });
        self.cache.invalidate();
        self.forget_allocation();
        result
    }

    /// Resizes the image as `rbd resize` does (see [`admin::resize_image`]):
    /// with every acknowledged write on RADOS first, and holding the
    /// exclusive lock where the image has one. Snapshots keep their data.
    pub fn resize(&self, new_size: u64) -> ImageResult<()> {
        let _gate = self.io_gate.write();
        self.persist_acknowledged()?;
        let info = self.refresh()?;
        if new_size == info.size {
            return Ok(());
        }
        let owned = self.header_owner(&info)?;
        // Taking the lock may have shown us a newer header.
        let info = if matches!(owned, Some((_, true))) {
            self.refresh()?
        } else {
            info
        };
        let result = admin::resize_image(&*self.store_image.store, &info, new_size, &info.snapc);
        if let Some(lock) = &self.store_image.lock {
            // object_map_resize changed the map under our in-memory copy.
            lock.reload_object_map()?;
        }
        drop(owned);
        self.cache.invalidate();
        self.forget_allocation();
        self.store_image.notify_header_update();
        self.refresh()?;
        result
    }

    /// Grows the head to `end` bytes if it is smaller, as `rbd resize`
    /// would (header, object map, other clients told), for a write or
    /// fallocate past the end. The grown range is a hole: no data is read
    /// or written, and unlike [`resize`](Self::resize) nothing is written
    /// back first (growing leaves every existing byte where it is).
    /// Growers queue on the io gate, so two appends never lose one; a
    /// size another client set meanwhile is re-read under it.
    pub fn grow_to(&self, end: u64) -> ImageResult<()> {
        let _gate = self.io_gate.write();
        let info = self.current_info()?;
        if end <= info.size {
            return Ok(());
        }
        self.check_writable(&info)?;
        let owned = self.header_owner(&info)?;
        // The lock's previous owner, or a client without the lock
        // feature, may have changed the size since we last looked.
        let info = self.refresh()?;
        if end <= info.size {
            return Ok(());
        }
        let result = admin::resize_image(&*self.store_image.store, &info, end, &info.snapc);
        if result.is_ok()
            && let Some(lock) = &self.store_image.lock
        {
            lock.grow_object_map(info.layout.object_count(end));
        }
        drop(owned);
        self.store_image.notify_header_update();
        self.refresh()?;
        result
    }

    /// Writes `data` at `offset` of the head, growing the image first when
    /// the write runs past its end (see [`grow_to`](Self::grow_to)).
    pub fn write_or_grow(&self, offset: u64, data: &[u8]) -> ImageResult<()> {
        match self.write(offset, data) {
            Err(ImageError::PastEnd { .. }) => {
                let end =
                    offset
                        .checked_add(data.len() as u64)
                        .ok_or_else(|| ImageError::PastEnd {
                            image: self.name().to_string(),
                            offset,
                            len: data.len() as u64,
                            size: self.info().size,
                        })?;
                self.grow_to(end)?;
                self.write(offset, data)
            }
            result => result,
        }
    }

    /// Flushes, gives back the exclusive lock and unwatches the header
    /// (unmount, or before rm/rename of the image).
    pub fn close(&self) -> ImageResult<()> {
        let flushed = self.flush();
        if let Some(lock) = &self.store_image.lock {
            lock.release()?;
        }
        self.store_image.release_watch();
        flushed
    }

    pub fn name(&self) -> &str {
        &self.store_image.name
    }

    pub fn info(&self) -> Arc<ImageInfo> {
        self.store_image.info()
    }

    pub fn refresh(&self) -> ImageResult<Arc<ImageInfo>> {
        let before = self.store_image.info();
        let after = self.store_image.refresh()?;
        if before.size != after.size || before.snapshots != after.snapshots {
            self.cache.invalidate();
        }
        Ok(after)
    }

    pub fn current_info(&self) -> ImageResult<Arc<ImageInfo>> {
        self.store_image.current_info()
    }

    /// Reads `len` bytes at `offset` of the image at `snap`, clipped at the
    /// image's size there. Missing objects and the part past an object's
    /// end read as zeros.
    pub fn read(&self, snap: SnapId, offset: u64, len: u64) -> ImageResult<Vec<u8>> {
        self.read_range(snap, offset, len, true)
    }

    /// [`read`](Self::read), but served from the cache's own buffer (no
    /// copy) when the range lies in one object, as most reads do: the
    /// buffer of a clean extent, or of the RADOS read in flight or made
    /// for it (a sequential reader's reads mostly wait for read-ahead).
    pub fn read_data(&self, snap: SnapId, offset: u64, len: u64) -> ImageResult<ReadData> {
        let info = self.current_info()?;
        if let Some(size) = info.size_at(snap)
            && offset < size
        {
            let len = len.min(size - offset);
            if let [e] = info.layout.map(offset, len).as_slice() {
                let sequential = self.cache.start_read(snap, offset, len);
                let bytes = self.cache.read_shared(snap, e.object_no, e.offset, e.len)?;
                self.cache.finish_read(snap, offset, len, sequential);
                return Ok(ReadData::Cached(bytes));
            }
        }
        self.read(snap, offset, len).map(ReadData::Owned)
    }

    /// [`read`](Self::read); `sequential` says whether the read counts for
    /// the cache's sequential-reader detection (a diff stream's reads jump
    /// over unchanged objects and are read ahead by the diff instead).
    fn read_range(
        &self,
        snap: SnapId,
        offset: u64,
        len: u64,
        sequential: bool,
    ) -> ImageResult<Vec<u8>> {
        let info = self.current_info()?;
        let size = info.size_at(snap).ok_or_else(|| ImageError::NoSnapshot {
            image: self.name().to_string(),
            snap: snap.to_string(),
        })?;
        if offset >= size {
            return Ok(Vec::new());
        }
        let len = len.min(size - offset);
        let mut buf = vec![0u8; len as usize];
        self.read_range_into(&info, snap, offset, &mut buf, sequential)?;
        Ok(buf)
    }

    /// Reads `out.len()` bytes at `offset` of the image at `snap` into
    /// `out`, which must lie within the image's size there.
    pub(crate) fn read_range_into(
        &self,
        info: &ImageInfo,
        snap: SnapId,
        offset: u64,
        out: &mut [u8],
        sequential: bool,
    ) -> ImageResult<()> {
        let len = out.len() as u64;
        let extents = info.layout.map(offset, len);
        // Extents are disjoint slices of `out`: read them concurrently.
        let mut slices = Vec::with_capacity(extents.len());
        let mut rest = &mut out[..];
        for e in &extents {
            let (head, tail) = rest.split_at_mut(e.len as usize);
            slices.push((e, head));
            rest = tail;
        }
        let stream = sequential && self.cache.start_read(snap, offset, len);
        self.in_parallel(slices, |(e, out): (&ObjectExtent, &mut [u8])| {
            self.cache.read_into(snap, e.object_no, e.offset, out)?;
            Ok(())
        })?;
        self.cache.finish_read(snap, offset, len, stream);
        Ok(())
    }

    /// Writes `data` at `offset` of the head. Fails without writing
    /// anything when the range runs past the image's end.
    ///
    /// If the store replaced a lost (blocklisted) RADOS client meanwhile,
    /// the write is tried once more through the new one (it takes the
    /// lock again): the data was not acknowledged yet, and writing the same
    /// bytes twice is harmless.
    pub fn write(&self, offset: u64, data: &[u8]) -> ImageResult<()> {
        let generation = self.store_image.store.generation();
        match self.write_once(offset, data) {
            Err(e) if self.store_image.store.generation() != generation => {
                debug!(
                    "image {}: write failed as the client was replaced ({e}); retrying",
                    self.name()
                );
                self.write_once(offset, data)
            }
            result => result,
        }
    }

    fn write_once(&self, offset: u64, data: &[u8]) -> ImageResult<()> {
        let _gate = self.io_gate.read();
        let mut info = self.current_info()?;
        self.check_writable(&info)?;
        self.check_may_write()?;
        // As librbd: an exclusive-lock image is ours before a write to it
        // is acknowledged, so another client's snapshot or lock request
        // comes to us, and we write the data back first. (Not held while
        // the cache takes the data: a writer waiting for dirty room must
        // not keep a hand-over from finishing.)
        // The lock guard goes before the refresh: a refresh that finds the
        // watch broken releases the lock, which waits for that guard.
        let acquired = matches!(self.header_owner(&info)?, Some((_, true)));
        if acquired {
            // The previous owner may have changed the header.
            info = self.refresh()?;
        }
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > info.size) {
            return Err(ImageError::PastEnd {
                image: self.name().to_string(),
                offset,
                len,
                size: info.size,
            });
        }
        let extents = info.layout.map(offset, len);
        self.forget_allocation();
        self.in_parallel(extents.iter().collect(), |e: &ObjectExtent| {
            let chunk = &data[e.buf_offset as usize..(e.buf_offset + e.len) as usize];
            self.cache.write(e.object_no, e.offset, chunk)
        })
    }

    /// The head's allocation changes with writes and discards.
    fn forget_allocation(&self) {
        self.allocated_cache.lock().remove(&crate::store::NOSNAP);
    }

    /// Refuses changes to an image we may only read.
    fn check_writable(&self, info: &ImageInfo) -> ImageResult<()> {
        match &info.read_only {
            Some(reason) => Err(ImageError::ReadOnly {
                image: self.name().to_string(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A write is acknowledged once it is in the cache, so a user the OSDs
    /// refuse writes to (`profile rbd-read-only`) must be found out before
    /// that, or the data would be dropped at write-back. Asked once per
    /// open image, with no side effect: removing an object that does not
    /// exist needs the write capability (EPERM without it, ENOENT with
    /// it). An answer that is neither (cluster trouble) is not remembered.
    fn check_may_write(&self) -> ImageResult<()> {
        const PROBE: &str = "rbdfs.write_probe";
        let may = match self.may_write.get() {
            Some(&may) => may,
            None => {
                let store = self.store_image.data_store();
                match store.remove(PROBE, &crate::format::SnapContext::default()) {
                    Err(e) if matches!(e.errno(), libc::EPERM | libc::EACCES) => {
                        info!(
                            "image {}: this CephX user may not write its data pool: \
                             writes fail with EROFS",
                            self.name()
                        );
                        *self.may_write.get_or_init(|| false)
                    }
                    Err(e) if e.is_not_found() => *self.may_write.get_or_init(|| true),
                    // Someone made the object: we could remove it, so we may write.
                    Ok(()) => *self.may_write.get_or_init(|| true),
                    Err(e) => {
                        debug!("image {}: write probe: {e}", self.name());
                        true
                    }
                }
            }
        };
        if may {
            Ok(())
        } else {
            Err(ImageError::ReadOnly {
                image: self.name().to_string(),
                reason: "the CephX user may not write this pool".into(),
            })
        }
    }

    /// Only the exclusive lock's owner changes the header (snapshots,
    /// size): takes the lock where the image has one and holds it until the
    /// guard goes. The flag says it was taken just now.
    fn header_owner(
        &self,
        info: &ImageInfo,
    ) -> ImageResult<Option<(parking_lot::RwLockReadGuard<'_, ()>, bool)>> {
        match &self.store_image.lock {
            Some(lock) if features::needs_lock(info.features) => Ok(Some(
                lock.owned_guard(self.store_image.watch_cookie_for_lock()?)?,
            )),
            _ => Ok(None),
        }
    }

    /// Returns once every acknowledged write of this image is on RADOS, or
    /// with the first write-back error since the last flush (fsync, close).
    pub fn flush(&self) -> ImageResult<()> {
        self.cache.flush()
    }

    /// Like [`flush`](Self::flush), for work that needs the data on RADOS
    /// first (snapshots, discard, resize, seek, lock handover): fails while a
    /// write-back error is pending, but leaves it for the next fsync/close
    /// of the file, whose writer is the one to hear about it.
    fn persist_acknowledged(&self) -> ImageResult<()> {
        if self.cache.write_back_all() {
            return Ok(());
        }
        Err(self.store_image.store_err(StoreError::Errno {
            op: "write-back",
            oid: self.name().to_string(),
            errno: libc::EIO,
        }))
    }

    /// Runs `f` on every item, concurrently when there is more than one
    /// (object I/O is latency-bound); returns the first error.
    fn in_parallel<T: Send>(
        &self,
        items: Vec<T>,
        f: impl Fn(T) -> ImageResult<()> + Sync,
    ) -> ImageResult<()> {
        if items.len() <= 1 {
            return items.into_iter().try_for_each(f);
        }
        let f = &f;
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .into_iter()
                .map(|item| s.spawn(move || f(item)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(self.store_image.store_err(StoreError::Errno {
                        op: "io worker",
                        oid: self.name().to_string(),
                        errno: libc::EIO,
                    }))
                })
            })
        })
    }

    /// Creates snapshot `snap_name` of the head as librbd does: a
    /// self-managed snap id from the pool, recorded in the header through
    /// the `rbd` class (`snap_add` for format 1, `snapshot_add` for format
    /// 2, which also snapshots the object map), after every acknowledged
    /// write is on RADOS. Writes are held off meanwhile so none straddles
    /// the new snap context.
    pub fn snap_create(&self, snap_name: &str) -> ImageResult<SnapshotInfo> {
        check_name(NameKind::Snapshot, snap_name)?;
        let _gate = self.io_gate.write();
        self.persist_acknowledged()?;
        let info = self.refresh()?;
        let image = self.name().to_string();
        if info.snapshot(snap_name).is_some() {
            return Err(ImageError::SnapshotExists {
                image,
                snap: snap_name.into(),
            });
        }
        self.check_writable(&info)?;
        // With an exclusive lock, only its owner changes the header.
        let owned = self.header_owner(&info)?;
        let store = &self.store_image.store;
        // Another client may record a newer snap id between our allocating
        // one and adding it; the class then refuses ours as stale (ESTALE)
        // and, as librbd does, we take a fresh id.
        let mut attempts = 0;
        let id = loop {
            attempts += 1;
            let id = store
                .selfmanaged_snap_create()
                .map_err(|e| self.store_image.store_err(e))?;
            let (method, input) = if info.format == 1 {
                let mut input = Encoder::new();
                input.string(snap_name).u64(id);
                ("snap_add", input.finish())
            } else {
                ("snapshot_add", v2::snapshot_add_input(id, snap_name))
            };
            let Err(e) = store.exec(&info.header_oid, "rbd", method, &input) else {
                break id;
            };
            // Leave no half-made snapshot: give the id back.
            if let Err(e2) = store.selfmanaged_snap_remove(id) {
                warn!("image {image}: cannot release snap id {id}: {e2}");
            }
            if e.errno() == libc::ESTALE && attempts < 16 {
                continue;
            }
            return Err(if e.errno() == libc::EEXIST {
                ImageError::SnapshotExists {
                    image,
                    snap: snap_name.into(),
                }
            } else {
                self.store_image.store_err(e)
            });
        };
        if let Some(lock) = &self.store_image.lock {
            lock.snapshot_object_map(id, features::has_fast_diff(info.features))?;
        }
        drop(owned);
        self.store_image.notify_header_update();
        let info = self.refresh()?;
        info!("image {image}: created snapshot {snap_name} (id {id})");
        info.snapshot(snap_name)
            .cloned()
            .ok_or(ImageError::NoSnapshot {
                image,
                snap: snap_name.into(),
            })
    }

    /// Runs a header change `f` as librbd runs its maintenance operations:
    /// on a fresh header, refused on an image served read-only, holding the
    /// exclusive lock where the image has one; then other clients are told
    /// and the header is read again.
    fn header_op<T>(
        &self,
        f: impl FnOnce(&dyn ObjectStore, &ImageInfo) -> ImageResult<T>,
    ) -> ImageResult<T> {
        let info = self.refresh()?;
        self.check_writable(&info)?;
        let owned = self.header_owner(&info)?;
        let info = if matches!(owned, Some((_, true))) {
            self.refresh()?
        } else {
            info
        };
        let result = f(&*self.store_image.store, &info);
        drop(owned);
        self.store_image.notify_header_update();
        self.refresh()?;
        result
    }

    /// Renames snapshot `old` to `new` (`rbd snap rename`).
    pub fn snap_rename(&self, old: &str, new: &str) -> ImageResult<()> {
        let name = self.name().to_string();
        self.header_op(|store, info| admin::rename_snapshot(store, info, &name, old, new))
    }

    /// Protects (`rbd snap protect`) or unprotects snapshot `snap`.
    pub fn snap_set_protected(&self, snap: &str, protect: bool) -> ImageResult<()> {
        let name = self.name().to_string();
        self.header_op(|store, info| {
            if protect {
                admin::protect_snapshot(store, info, &name, snap)
            } else {
                admin::unprotect_snapshot(store, info, &name, snap)
            }
        })
    }

    /// Rolls the head back to snapshot `snap_name` as `rbd snap rollback`
    /// does: every acknowledged write on RADOS first, writes held off,
    /// holding the exclusive lock where the image has one; the head is
    /// resized to the snapshot's size, its object map and objects rolled
    /// back; the cache is dropped. The caller makes sure nobody else
    /// writes the image (librbd would refuse or take the lock too).
    pub fn rollback(&self, snap_name: &str) -> ImageResult<()> {
        let _gate = self.io_gate.write();
        self.persist_acknowledged()?;
        let info = self.refresh()?;
        let snap = info
            .snapshot(snap_name)
            .cloned()
            .ok_or_else(|| ImageError::NoSnapshot {
                image: self.name().to_string(),
                snap: snap_name.into(),
            })?;
        self.check_writable(&info)?;
        let owned = self.header_owner(&info)?;
        let mut info = if matches!(owned, Some((_, true))) {
            self.refresh()?
        } else {
            info
        };
        let store = &*self.store_image.store;
        let mut result = Ok(());
        if info.size != snap.size {
            result = admin::resize_image(store, &info, snap.size, &info.snapc);
            if result.is_ok() {
                info = self.store_image.refresh()?;
            }
        }
        if result.is_ok() {
            result = admin::rollback_objects(
                store,
                &**self.store_image.data_store(),
                &info,
                self.name(),
                &snap,
                &info.snapc,
            );
        }
        if let Some(lock) = &self.store_image.lock
            && let Err(e) = lock.reload_object_map()
        {
            warn!("image {}: reloading the object map: {e}", self.name());
        }
        drop(owned);
        self.cache.invalidate();
        self.forget_allocation();
        self.store_image.notify_header_update();
        self.refresh()?;
        result
    }

    /// Flattens a clone as `rbd flatten` does: every object the parent
    /// still provides is copied up (written with the parent's bytes, the
    /// object map kept true), progress logged, then the clone is detached
    /// (see [`admin::detach_parent`]). Reads are the same before and
    /// after. EINVAL when the image is not a clone.
    pub fn flatten(&self) -> ImageResult<()> {
        let _gate = self.io_gate.write();
        self.persist_acknowledged()?;
        let info = self.refresh()?;
        let Some(parent) = info.parent.clone() else {
            return Err(ImageError::InvalidArgument {
                image: self.name().to_string(),
                reason: "not a clone (it has no parent)".into(),
            });
        };
        self.check_writable(&info)?;
        let owned = self.header_owner(&info)?;
        let count = info.layout.object_count(parent.overlap);
        info!(
            "image {}: flattening {count} objects from its parent",
            self.name()
        );
        let done = std::sync::atomic::AtomicU64::new(0);
        let next = std::sync::atomic::AtomicU64::new(0);
        let step = (count / 10).max(1);
        let copy = |_: ()| -> ImageResult<()> {
            use std::sync::atomic::Ordering::Relaxed;
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= count {
                    return Ok(());
                }
                crate::cache::ObjectIo::write_object(&*self.store_image, n, 0, &[])?;
                let d = done.fetch_add(1, Relaxed) + 1;
                if d.is_multiple_of(step) || d == count {
                    info!("image {}: flatten: {d}/{count} objects", self.name());
                }
            }
        };
        let mut result = self.in_parallel(vec![(); admin::CONCURRENT_OPS], copy);
        if result.is_ok() {
            let info = self.refresh()?;
            result = admin::detach_parent(&*self.store_image.store, &info, self.name());
        }
        drop(owned);
        self.cache.invalidate();
        self.forget_allocation();
        self.store_image.notify_header_update();
        self.refresh()?;
        result
    }

    /// Whether snapshot `snap` is protected (not unprotected: an
    /// unprotect in progress counts as protected).
    pub fn snap_is_protected(&self, snap: &str) -> ImageResult<bool> {
        let info = self.current_info()?;
        let s = info.snapshot(snap).ok_or_else(|| ImageError::NoSnapshot {
            image: self.name().to_string(),
            snap: snap.to_string(),
        })?;
        let status = admin::protection_status(&*self.store_image.store, &info, self.name(), s.id)?;
        Ok(status != v2::ProtectionStatus::Unprotected)
    }

    /// Removes snapshot `snap_name` as librbd does: its object map (format
    /// 2), the header record (`snap_remove` / `snapshot_remove`), then the
    /// pool's self-managed snap id. A protected snapshot, or one clones
    /// still read from, is refused with EBUSY before anything changes.
    pub fn snap_remove(&self, snap_name: &str) -> ImageResult<()> {
        let info = self.refresh()?;
        let image = self.name().to_string();
        let snap = info
            .snapshot(snap_name)
            .cloned()
            .ok_or_else(|| ImageError::NoSnapshot {
                image: image.clone(),
                snap: snap_name.into(),
            })?;
        self.check_writable(&info)?;
        let store: &dyn ObjectStore = &*self.store_image.store;
        if admin::protection_status(store, &info, &image, snap.id)?
            != v2::ProtectionStatus::Unprotected
        {
            return Err(ImageError::Busy {
                image,
                reason: format!("snapshot {snap_name} is protected"),
            });
        }
        if admin::v2_child_count(store, &info, &image, snap.id)? > 0 {
            return Err(ImageError::Busy {
                image,
                reason: format!("snapshot {snap_name} has clones (flatten them first)"),
            });
        }
        let owned = self.header_owner(&info)?;
        let store = &self.store_image.store;
        let (method, input) = if info.format == 1 {
            let mut input = Encoder::new();
            input.string(snap_name);
            ("snap_remove", input.finish())
        } else {
            ("snapshot_remove", v2::snapshot_remove_input(snap.id))
        };
        if let Some(lock) = &self.store_image.lock {
            // librbd folds the removed map into the next newer snapshot's.
            let next = info
                .snapshots
                .iter()
                .chain(&info.hidden_snapshots)
                .map(|s| s.id)
                .filter(|&id| id > snap.id)
                .min();
            lock.remove_snapshot_object_map(snap.id, next, features::has_fast_diff(info.features))?;
        }
        store
            .exec(&info.header_oid, "rbd", method, &input)
            .map_err(|e| match e.errno() {
                libc::EBUSY => ImageError::Busy {
                    image: image.clone(),
                    reason: format!("snapshot {snap_name} is protected or has clones"),
                },
                _ => self.store_image.store_err(e),
            })?;
        drop(owned);
        if let Err(e) = store.selfmanaged_snap_remove(snap.id) {
            warn!(
                "image {image}: snapshot {snap_name} removed but its id {} was not released: {e}",
                snap.id
            );
        }
        self.store_image.notify_header_update();
        self.refresh()?;
        info!("image {image}: removed snapshot {snap_name}");
        Ok(())
    }
}

/// What a name names, for [`check_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Image,
    Snapshot,
}

/// No image may be called this: an rbdfs mount shows the snapshots under a
/// directory of this name in its root, so the image could not be shown
/// (the file system's `SNAP_DIR`; a test there keeps the two equal).
pub const RESERVED_IMAGE_NAME: &str = ".snap";

/// No image may be called this either: the mount shows the diff streams
/// (incremental backups) under it (the file system's `DIFF_DIR`).
pub const RESERVED_DIFF_NAME: &str = ".diff";

/// Nor this: the mount shows partitions as files under it (`PART_DIR`).
pub const RESERVED_PART_NAME: &str = ".part";

/// The RBD-level rules for the names we create and open, the one check of
/// the image layer: non-empty, at most [`MAX_NAME_LEN`] bytes, no `/` (the
/// pool/image separator of `rbd`) or NUL, not `.` or `..`; a snapshot name
/// also without `@` (the image@snap separator), an image name not
/// [`RESERVED_IMAGE_NAME`], [`RESERVED_DIFF_NAME`] or
/// [`RESERVED_PART_NAME`]. EINVAL otherwise.
pub fn check_name(kind: NameKind, name: &str) -> ImageResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && match kind {
            NameKind::Image => {
                ![RESERVED_IMAGE_NAME, RESERVED_DIFF_NAME, RESERVED_PART_NAME].contains(&name)
            }
            NameKind::Snapshot => !name.contains('@'),
        };
    match (ok, kind) {
        (true, _) => Ok(()),
        (false, NameKind::Snapshot) => Err(ImageError::InvalidName(name.to_string())),
        (false, NameKind::Image) => Err(ImageError::InvalidArgument {
            image: name.to_string(),
            reason: "invalid image name (empty, longer than 255 bytes, `/` or NUL in it, \
                     or `.`, `..`, `.snap`, `.diff`, `.part`)"
                .into(),
        }),
    }
}
