//! One open RBD image over an [`ObjectStore`]: its header, reads at the
//! head or a snapshot, writes with the image's snap context, and snapshot
//! create/remove. Turns byte ranges into object I/O through [`Layout`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, info, warn};
use parking_lot::{Mutex, RwLock};
use thiserror::Error;

use crate::format::decode::Encoder;
use crate::format::v1::{HeaderV1, header_object};
use crate::format::{FormatError, MAX_NAME_LEN, SnapshotInfo};
use crate::layout::Layout;
use crate::store::{NOSNAP, ObjectStore, SnapContext, SnapId, StoreError, WatchEvent, WatchGuard};

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image {0}: no such image")]
    NotFound(String),
    #[error("image {image}: {source}")]
    Corrupt {
        image: String,
        #[source]
        source: FormatError,
    },
    #[error("image {image}: {source}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
    #[error("image {image} is read-only: {reason}")]
    ReadOnly { image: String, reason: String },
    #[error("image {image}: {offset}+{len} is past the end ({size} bytes)")]
    PastEnd {
        image: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("image {image}: snapshot {snap}: no such snapshot")]
    NoSnapshot { image: String, snap: String },
    #[error("image {image}: snapshot {snap} already exists")]
    SnapshotExists { image: String, snap: String },
    #[error("invalid snapshot name {0:?}")]
    InvalidName(String),
}

impl ImageError {
    pub fn errno(&self) -> i32 {
        match self {
            ImageError::NotFound(_) | ImageError::NoSnapshot { .. } => libc::ENOENT,
            ImageError::Corrupt { .. } => libc::EIO,
            ImageError::Store { source, .. } => match source.errno() {
                // A data or header object that vanished under us is an I/O
                // error for the caller, not "no such file".
                libc::ENOENT => libc::EIO,
                // ESHUTDOWN is how librados reports EBLOCKLISTED.
                e @ (libc::ETIMEDOUT
                | libc::EROFS
                | libc::ENOSPC
                | libc::EDQUOT
                | libc::ESHUTDOWN) => e,
                _ => libc::EIO,
            },
            ImageError::ReadOnly { .. } => libc::EROFS,
            ImageError::PastEnd { .. } => libc::ENOSPC,
            ImageError::SnapshotExists { .. } => libc::EEXIST,
            ImageError::InvalidName(_) => libc::EINVAL,
        }
    }

    /// Expected outcomes (a lookup of a name that does not exist) are not
    /// worth a warning in the log.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            ImageError::NotFound(_)
                | ImageError::NoSnapshot { .. }
                | ImageError::PastEnd { .. }
                | ImageError::ReadOnly { .. }
                | ImageError::SnapshotExists { .. }
                | ImageError::InvalidName(_)
        )
    }
}

pub type ImageResult<T> = Result<T, ImageError>;

/// The header state of an image, as one immutable value: a refresh swaps in
/// a new one, so a reader never sees a half-updated header.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub format: u8,
    pub object_prefix: String,
    pub order: u8,
    pub layout: Layout,
    pub size: u64,
    pub snapc: SnapContext,
    /// Newest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Why writes are refused, if they are.
    pub read_only: Option<String>,
}

impl ImageInfo {
    fn from_v1(h: HeaderV1) -> ImageInfo {
        let snaps: Vec<SnapId> = h.snapshots.iter().map(|s| s.id).collect();
        ImageInfo {
            format: 1,
            object_prefix: h.block_name,
            order: h.order,
            layout: Layout::plain(h.order),
            size: h.size,
            snapc: SnapContext {
                seq: h.snap_seq,
                snaps,
            },
            snapshots: h.snapshots,
            read_only: None,
        }
    }

    pub fn data_object(&self, object_no: u64) -> String {
        match self.format {
            1 => format!("{}.{:012x}", self.object_prefix, object_no),
            _ => format!("{}.{:016x}", self.object_prefix, object_no),
        }
    }

    pub fn snapshot(&self, name: &str) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// Image size at `snap` (NOSNAP: the head).
    pub fn size_at(&self, snap: SnapId) -> Option<u64> {
        if snap == NOSNAP {
            return Some(self.size);
        }
        self.snapshots.iter().find(|s| s.id == snap).map(|s| s.size)
    }
}

pub struct Image {
    store: Arc<dyn ObjectStore>,
    name: String,
    info: RwLock<Arc<ImageInfo>>,
    /// Set by the header watch when another client changed the header, and
    /// when the watch broke (a notification may have been lost).
    stale: Arc<AtomicBool>,
    watch: Mutex<Option<Box<dyn WatchGuard>>>,
    /// Writes hold it shared; snapshot creation holds it exclusively so no
    /// write is in flight while the snap context changes.
    io_gate: RwLock<()>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("name", &self.name).finish()
    }
}

impl Image {
    pub fn open(store: Arc<dyn ObjectStore>, name: &str) -> ImageResult<Image> {
        let info = load_header(&*store, name)?;
        let image = Image {
            store,
            name: name.to_string(),
            info: RwLock::new(Arc::new(info)),
            stale: Arc::new(AtomicBool::new(false)),
            watch: Mutex::new(None),
            io_gate: RwLock::new(()),
        };
        image.ensure_watch();
        Ok(image)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> Arc<ImageInfo> {
        self.info.read().clone()
    }

    fn header_oid(&self) -> String {
        header_object(&self.name)
    }

    /// Watches the header so that snapshots and resizes by other clients
    /// reach us; without a watch every refresh point re-reads the header.
    fn ensure_watch(&self) {
        let mut watch = self.watch.lock();
        if watch.is_some() {
            return;
        }
        let stale = self.stale.clone();
        let name = self.name.clone();
        let callback = Box::new(move |event: WatchEvent<'_>| {
            if let WatchEvent::Error(e) = event {
                warn!("image {name}: header watch failed ({e}); will re-read the header");
            }
            stale.store(true, Ordering::SeqCst);
            Vec::new()
        });
        match self.store.watch(&self.header_oid(), callback) {
            Ok(guard) => *watch = Some(guard),
            Err(e) => {
                warn!("image {}: cannot watch the header: {e}", self.name);
                self.stale.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Re-reads the header now.
    pub fn refresh(&self) -> ImageResult<Arc<ImageInfo>> {
        // Clear first: a notification that arrives while we read is then
        // not lost, it just causes one more refresh.
        self.stale.store(false, Ordering::SeqCst);
        let info = Arc::new(load_header(&*self.store, &self.name)?);
        *self.info.write() = info.clone();
        if self.watch.lock().is_none() {
            self.ensure_watch();
        }
        Ok(info)
    }

    /// The header, re-read first if it may have changed.
    pub fn current_info(&self) -> ImageResult<Arc<ImageInfo>> {
        if self.stale.load(Ordering::SeqCst) {
            self.refresh()
        } else {
            Ok(self.info())
        }
    }

    fn store_err(&self, source: StoreError) -> ImageError {
        ImageError::Store {
            image: self.name.clone(),
            source,
        }
    }

    /// Reads `len` bytes at `offset` of the image at `snap`, clipped at the
    /// image's size there. Missing objects and the part past an object's
    /// end read as zeros.
    pub fn read(&self, snap: SnapId, offset: u64, len: u64) -> ImageResult<Vec<u8>> {
        let info = self.current_info()?;
        let size = info.size_at(snap).ok_or_else(|| ImageError::NoSnapshot {
            image: self.name.clone(),
            snap: snap.to_string(),
        })?;
        if offset >= size {
            return Ok(Vec::new());
        }
        let len = len.min(size - offset);
        let mut buf = vec![0u8; len as usize];
        let extents = info.layout.map(offset, len);
        let read_one = |e: &crate::layout::ObjectExtent, out: &mut [u8]| -> ImageResult<()> {
            let oid = info.data_object(e.object_no);
            match self.store.read(&oid, e.offset, e.len as usize, snap) {
                Ok(data) => {
                    out[..data.len()].copy_from_slice(&data);
                    Ok(())
                }
                Err(err) if err.is_not_found() => Ok(()),
                Err(err) => Err(self.store_err(err)),
            }
        };
        // Extents are disjoint slices of `buf`: read them concurrently.
        let mut slices = Vec::with_capacity(extents.len());
        let mut rest = &mut buf[..];
        for e in &extents {
            let (head, tail) = rest.split_at_mut(e.len as usize);
            slices.push((e, head));
            rest = tail;
        }
        self.in_parallel(slices, |(e, out)| read_one(e, out))?;
        Ok(buf)
    }

    /// Writes `data` at `offset` of the head. Fails without writing
    /// anything when the range runs past the image's end.
    pub fn write(&self, offset: u64, data: &[u8]) -> ImageResult<()> {
        let _gate = self.io_gate.read();
        let info = self.current_info()?;
        if let Some(reason) = &info.read_only {
            return Err(ImageError::ReadOnly {
                image: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > info.size) {
            return Err(ImageError::PastEnd {
                image: self.name.clone(),
                offset,
                len,
                size: info.size,
            });
        }
        let extents = info.layout.map(offset, len);
        let write_one = |e: &crate::layout::ObjectExtent| -> ImageResult<()> {
            let oid = info.data_object(e.object_no);
            let chunk = &data[e.buf_offset as usize..(e.buf_offset + e.len) as usize];
            self.store
                .write(&oid, e.offset, chunk, &info.snapc)
                .map_err(|err| self.store_err(err))
        };
        self.in_parallel(extents.iter().collect(), write_one)
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
                    Err(self.store_err(StoreError::Errno {
                        op: "io worker",
                        oid: self.name.clone(),
                        errno: libc::EIO,
                    }))
                })
            })
        })
    }

    /// Creates snapshot `snap_name` of the head as librbd does for format 1:
    /// a self-managed snap id from the pool, recorded with `rbd.snap_add` on
    /// the header. Writes are held off meanwhile so none straddles the new
    /// snap context.
    pub fn snap_create(&self, snap_name: &str) -> ImageResult<SnapshotInfo> {
        validate_snap_name(snap_name)?;
        let _gate = self.io_gate.write();
        let info = self.refresh()?;
        if info.snapshot(snap_name).is_some() {
            return Err(ImageError::SnapshotExists {
                image: self.name.clone(),
                snap: snap_name.into(),
            });
        }
        if let Some(reason) = &info.read_only {
            return Err(ImageError::ReadOnly {
                image: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let id = self
            .store
            .selfmanaged_snap_create()
            .map_err(|e| self.store_err(e))?;
        let mut input = Encoder::new();
        input.string(snap_name).u64(id);
        if let Err(e) = self
            .store
            .exec(&self.header_oid(), "rbd", "snap_add", &input.finish())
        {
            // Leave no half-made snapshot: give the id back.
            if let Err(e2) = self.store.selfmanaged_snap_remove(id) {
                warn!("image {}: cannot release snap id {id}: {e2}", self.name);
            }
            return Err(if e.errno() == libc::EEXIST {
                ImageError::SnapshotExists {
                    image: self.name.clone(),
                    snap: snap_name.into(),
                }
            } else {
                self.store_err(e)
            });
        }
        self.notify_header_update();
        let info = self.refresh()?;
        info!(
            "image {}: created snapshot {snap_name} (id {id})",
            self.name
        );
        info.snapshot(snap_name)
            .cloned()
            .ok_or_else(|| ImageError::NoSnapshot {
                image: self.name.clone(),
                snap: snap_name.into(),
            })
    }

    /// Removes snapshot `snap_name`: `rbd.snap_remove` on the header, then
    /// the pool's self-managed snap id, as librbd does for format 1.
    pub fn snap_remove(&self, snap_name: &str) -> ImageResult<()> {
        let info = self.refresh()?;
        let snap = info
            .snapshot(snap_name)
            .cloned()
            .ok_or_else(|| ImageError::NoSnapshot {
                image: self.name.clone(),
                snap: snap_name.into(),
            })?;
        let mut input = Encoder::new();
        input.string(snap_name);
        self.store
            .exec(&self.header_oid(), "rbd", "snap_remove", &input.finish())
            .map_err(|e| self.store_err(e))?;
        if let Err(e) = self.store.selfmanaged_snap_remove(snap.id) {
            warn!(
                "image {}: snapshot {snap_name} removed but its id {} was not released: {e}",
                self.name, snap.id
            );
        }
        self.notify_header_update();
        self.refresh()?;
        info!("image {}: removed snapshot {snap_name}", self.name);
        Ok(())
    }

    /// Tells other clients (librbd, krbd) that the header changed.
    fn notify_header_update(&self) {
        if let Err(e) = self.store.notify(&self.header_oid(), &[], 5000) {
            debug!("image {}: header notify failed: {e}", self.name);
        }
    }
}

/// Snapshot names as librbd and our `.snap` directory accept them.
pub fn validate_snap_name(name: &str) -> ImageResult<()> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || name.contains(['/', '@', '\0'])
    {
        return Err(ImageError::InvalidName(name.to_string()));
    }
    Ok(())
}

fn load_header(store: &dyn ObjectStore, name: &str) -> ImageResult<ImageInfo> {
    let oid = header_object(name);
    let raw = store.read_full(&oid).map_err(|e| {
        if e.is_not_found() {
            ImageError::NotFound(name.to_string())
        } else {
            ImageError::Store {
                image: name.to_string(),
                source: e,
            }
        }
    })?;
    let header = HeaderV1::decode(&raw).map_err(|source| ImageError::Corrupt {
        image: name.to_string(),
        source,
    })?;
    Ok(ImageInfo::from_v1(header))
}
