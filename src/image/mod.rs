//! One open RBD image: reads at the head or a snapshot, writes with the
//! image's snap context, flush; snapshot operations are in `snapshots`. Byte ranges
//! become object extents through the image's [`Layout`](crate::layout::Layout),
//! and object I/O goes through the [cache](crate::cache) to [`StoreImage`].

pub mod admin;
mod diff;
pub mod features;
mod header;
mod info;
mod lock;
mod names;
mod object_map;
mod snapshots;
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
pub use self::names::{
    NameKind, RESERVED_DIFF_NAME, RESERVED_IMAGE_NAME, RESERVED_PART_NAME, check_name,
};
pub use self::sparse::Seek;
pub use self::store_image::StoreImage;
use crate::cache::{Cache, CachedBytes, ImageCache};
pub use crate::error::{ImageError, ImageResult};
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
        self.finish_rewrite(owned, result)
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

    /// The end of an operation that rewrote data objects and the header
    /// (resize, rollback, flatten): the header turn given up, what the
    /// cache and the allocation map held dropped, other clients told, the
    /// header reloaded; then the operation's own `result`.
    fn finish_rewrite<T>(
        &self,
        owned: Option<(parking_lot::RwLockReadGuard<'_, ()>, bool)>,
        result: ImageResult<T>,
    ) -> ImageResult<T> {
        drop(owned);
        self.cache.invalidate();
        self.forget_allocation();
        self.store_image.notify_header_update();
        self.refresh()?;
        result
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
}
