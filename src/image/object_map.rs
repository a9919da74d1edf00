//! The head's object map (`rbd_object_map.ID`) as the exclusive lock's
//! owner keeps it: loaded when the lock is taken, forgotten when it goes,
//! and kept true for every object written (librbd's order: the map says
//! "exists" before the data is written), plus the snapshot map copies
//! librbd makes around snapshot create and remove. Only the lock
//! ([`ExclusiveLock`](super::lock::ExclusiveLock)) decides when.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{ImageError, ImageResult};
use crate::format::v2::*;
use crate::format::{FormatError, NOSNAP};
use crate::store::{ObjectStore, StoreError};

pub struct HeadObjectMap {
    store: Arc<dyn ObjectStore>,
    image: String,
    image_id: String,
    /// The image has the object-map feature (may change with a refresh).
    enabled: AtomicBool,
    /// Our copy, while we own the lock.
    map: Mutex<Option<ObjectMap>>,
}

impl HeadObjectMap {
    pub fn new(store: Arc<dyn ObjectStore>, image: &str, image_id: &str, enabled: bool) -> Self {
        HeadObjectMap {
            store,
            image: image.to_string(),
            image_id: image_id.to_string(),
            enabled: AtomicBool::new(enabled),
            map: Mutex::new(None),
        }
    }

    /// Whether the image has the object-map feature.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Follows a feature change seen at refresh; returns what it was.
    pub fn set_enabled(&self, enabled: bool) -> bool {
        self.enabled.swap(enabled, Ordering::SeqCst)
    }

    /// Drops our copy (the lock is going).
    pub fn forget(&self) {
        *self.map.lock() = None;
    }

    fn err(&self, op: &'static str, e: StoreError) -> ImageError {
        let _ = op;
        ImageError::Store {
            image: self.image.clone(),
            source: e,
        }
    }

    fn oid(&self) -> String {
        object_map_object(&self.image_id, NOSNAP)
    }

    /// After snapshot `snap_id` was added: the head's object map becomes
    /// the snapshot's (`rbd_object_map.ID.SNAP`), and with fast-diff every
    /// existing object of the head turns exists-clean (librbd's
    /// object_map::SnapshotCreateRequest). Needs the lock.
    pub fn snapshot(&self, snap_id: u64, fast_diff: bool) -> ImageResult<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let head = self.oid();
        let raw = self
            .store
            .read_full(&head)
            .map_err(|e| self.err("read object map", e))?;
        let snap_oid = object_map_object(&self.image_id, snap_id);
        self.store
            .write(&snap_oid, 0, &raw, &Default::default())
            .map_err(|e| self.err("write snapshot object map", e))?;
        if fast_diff {
            self.store
                .exec(&head, RBD_CLASS, "object_map_snap_add", &[])
                .map_err(|e| self.err("object_map_snap_add", e))?;
        }
        self.load()
    }

    /// Before snapshot `snap_id` goes: with fast-diff, objects it saw as
    /// existing become exists (not clean) in the map of the next newer
    /// snapshot `next` (the head's when None), so a diff across the removed
    /// snapshot still sees them change; then its map object is removed
    /// (librbd's object_map::SnapshotRemoveRequest).
    pub fn remove_snapshot(
        &self,
        snap_id: u64,
        next: Option<u64>,
        fast_diff: bool,
    ) -> ImageResult<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let snap_oid = object_map_object(&self.image_id, snap_id);
        let raw = match self.store.read_full(&snap_oid) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(self.err("read snapshot object map", e)),
        };
        if fast_diff {
            let target = match next {
                Some(next) => object_map_object(&self.image_id, next),
                None => self.oid(),
            };
            match self
                .store
                .exec(&target, RBD_CLASS, "object_map_snap_remove", &raw)
            {
                Ok(_) => {}
                // The next snapshot has no map (made before the feature).
                Err(e) if next.is_some() && e.is_not_found() => {}
                Err(e) => return Err(self.err("object_map_snap_remove", e)),
            }
            if next.is_none() {
                self.load()?;
            }
        }
        match self.store.remove(&snap_oid, &Default::default()) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(self.err("remove snapshot object map", e)),
        }
    }

    /// After the image grew (`object_map_resize` on the OSD made the new
    /// objects nonexistent): the same in our copy. Not re-read, because
    /// write-backs in flight may be marking objects in it meanwhile.
    pub fn grow(&self, object_count: u64) {
        if let Some(map) = self.map.lock().as_mut() {
            map.grow(object_count);
        }
    }

    pub fn load(&self) -> ImageResult<()> {
        let raw = self
            .store
            .read_full(&self.oid())
            .map_err(|e| self.err("read object map", e))?;
        let map = ObjectMap::decode(&raw).map_err(|source| ImageError::Corrupt {
            image: self.image.clone(),
            source,
        })?;
        *self.map.lock() = Some(map);
        Ok(())
    }

    /// Object `object_no`'s state in the head's object map, if we hold it.
    pub fn state(&self, object_no: u64) -> Option<ObjectState> {
        self.map.lock().as_ref().and_then(|m| m.get(object_no))
    }

    /// Sets object `object_no`'s state in the head's object map, on the
    /// OSD and in our copy (a no-op without the feature or when it already
    /// is in that state). Call with the lock held.
    pub fn set_state(&self, object_no: u64, state: ObjectState) -> ImageResult<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let current = self.map.lock().as_ref().and_then(|m| m.get(object_no));
        if current == Some(state) {
            return Ok(());
        }
        if current.is_none() {
            return Err(ImageError::Corrupt {
                image: self.image.clone(),
                source: FormatError::invalid(
                    "object map",
                    format!("no entry for object {object_no}"),
                ),
            });
        }
        let input = object_map_update_input(object_no, object_no + 1, state, None);
        self.store
            .exec(&self.oid(), RBD_CLASS, "object_map_update", &input)
            .map_err(|e| self.err("object_map_update", e))?;
        if let Some(map) = self.map.lock().as_mut() {
            map.set(object_no, state);
        }
        Ok(())
    }
}
