//! Snapshot operations on an open image: create, rename, protect,
//! rollback, flatten, remove. Each changes the header through the `rbd`
//! class and tells other clients to re-read it.

use log::{info, warn};

use super::info::ImageInfo;
use super::names::{NameKind, check_name};
use super::{Image, admin, features};
use crate::error::{ImageError, ImageResult};
use crate::format::SnapshotInfo;
use crate::format::decode::Encoder;
use crate::format::v2;
use crate::store::ObjectStore;

impl Image {
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
        self.finish_rewrite(owned, result)
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
        self.finish_rewrite(owned, result)
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
