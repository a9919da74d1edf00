//! The part of an image that talks to RADOS: header loading and refresh,
//! the header watch, and object-granular reads and writes with the right
//! snap id and snap context. The cache sits on top of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, warn};
use parking_lot::{Mutex, RwLock};

use super::info::{ImageError, ImageInfo, ImageResult};
use crate::cache::ObjectIo;
use crate::format::v1::{HeaderV1, header_object};
use crate::layout::Layout;
use crate::store::{ObjectStore, SnapId, StoreError, WatchEvent, WatchGuard};

pub struct ImageCore {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) name: String,
    info: RwLock<Arc<ImageInfo>>,
    /// Set by the header watch when another client changed the header, and
    /// when the watch broke (a notification may have been lost).
    stale: Arc<AtomicBool>,
    watch: Mutex<Option<Box<dyn WatchGuard>>>,
}

impl ImageCore {
    pub fn open(store: Arc<dyn ObjectStore>, name: &str) -> ImageResult<ImageCore> {
        let info = load_header(&*store, name)?;
        let core = ImageCore {
            store,
            name: name.to_string(),
            info: RwLock::new(Arc::new(info)),
            stale: Arc::new(AtomicBool::new(false)),
            watch: Mutex::new(None),
        };
        core.ensure_watch();
        Ok(core)
    }

    pub fn info(&self) -> Arc<ImageInfo> {
        self.info.read().clone()
    }

    pub(super) fn header_oid(&self) -> String {
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
}

impl ObjectIo for ImageCore {
    fn read_object(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> ImageResult<Vec<u8>> {
        let info = self.current_info()?;
        let oid = info.data_object(object_no);
        let mut out = match self.store.read(&oid, offset, len as usize, snap) {
            Ok(data) => data,
            Err(err) if err.is_not_found() => Vec::new(),
            Err(err) => return Err(self.store_err(err)),
        };
        out.resize(len as usize, 0);
        Ok(out)
    }

    fn write_object(&self, object_no: u64, offset: u64, data: &[u8]) -> ImageResult<()> {
        // The newest snap context: a write must never carry an older one
        // than the snapshots that exist, or the OSD skips preserving them.
        let info = self.current_info()?;
        if let Some(reason) = &info.read_only {
            return Err(ImageError::ReadOnly {
                image: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let oid = info.data_object(object_no);
        self.store
            .write(&oid, offset, data, &info.snapc)
            .map_err(|e| self.store_err(e))
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
