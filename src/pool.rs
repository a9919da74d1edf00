//! The images of one pool: the directory listing and a table of opened
//! images shared by every file handle.

use std::collections::HashMap;
use std::sync::Arc;

use log::warn;
use parking_lot::Mutex;

use crate::cache::Cache;
use crate::format::tmap::Tmap;
use crate::format::v2::{decode_dir_list, dir_list_input};
use crate::image::admin::{self, CreateOptions};
use crate::image::{Image, ImageError, ImageResult};
use crate::store::{ObjectStore, StoreError};

pub mod namespaces;
#[cfg(test)]
mod tests;

/// Object whose data holds the format-1 image names as a TMAP.
pub const DIRECTORY: &str = "rbd_directory";

pub struct Pool {
    store: Arc<dyn ObjectStore>,
    cache: Arc<Cache>,
    /// `--image`: expose only this image.
    only: Option<String>,
    open: Mutex<HashMap<String, Arc<Image>>>,
}

impl Pool {
    pub fn new(store: Arc<dyn ObjectStore>, cache: Arc<Cache>, only: Option<String>) -> Pool {
        Pool {
            store,
            cache,
            only,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.cache.stats()
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Image names from `rbd_directory` (format 1 in its TMAP data, format
    /// 2 through `rbd.dir_list`), sorted. An undecodable directory part is
    /// left out with a log line (opening a known name still works). Which
    /// names can be file names is the file system's business.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut v1 = self.list_v1()?;
        let v2 = self.list_v2()?;
        v1.retain(|n| {
            let both = v2.contains(n);
            if both {
                warn!("image {n} is listed as both format 1 and format 2; showing it once");
            }
            !both
        });
        let mut names: Vec<String> = v1.into_iter().chain(v2).collect();
        if let Some(only) = &self.only {
            names.retain(|n| n == only);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn list_v1(&self) -> Result<Vec<String>, StoreError> {
        let raw = match self.store.read_full(DIRECTORY) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        let tmap = match Tmap::decode(&raw) {
            Ok(t) => t,
            Err(e) => {
                warn!("{DIRECTORY}: {e}; listing no format-1 images");
                Tmap::default()
            }
        };
        Ok(tmap
            .entries
            .into_iter()
            .filter_map(|(key, _)| match String::from_utf8(key) {
                Ok(name) => Some(name),
                Err(e) => {
                    warn!(
                        "{DIRECTORY}: image name {:?} is not UTF-8; skipped",
                        e.as_bytes()
                    );
                    None
                }
            })
            .collect())
    }

    fn list_v2(&self) -> Result<Vec<String>, StoreError> {
        const PAGE: u64 = 1024;
        let mut names = Vec::new();
        let mut after: Vec<u8> = Vec::new();
        loop {
            let reply =
                match self
                    .store
                    .exec(DIRECTORY, "rbd", "dir_list", &dir_list_input(&after, PAGE))
                {
                    Ok(r) => r,
                    Err(e) if e.is_not_found() => break,
                    // The in-memory test store has no object classes.
                    Err(e) if e.errno() == libc::EOPNOTSUPP => break,
                    Err(e) => return Err(e),
                };
            let entries = match decode_dir_list(&reply) {
                Ok(e) => e,
                Err(e) => {
                    warn!("{DIRECTORY}: {e}; listing no more format-2 images");
                    break;
                }
            };
            let full_page = entries.len() as u64 >= PAGE;
            for entry in &entries {
                match entry.name_str() {
                    Some(n) => names.push(n.to_string()),
                    None => warn!(
                        "{DIRECTORY}: image name {:?} is not UTF-8; skipped",
                        entry.name
                    ),
                }
            }
            match entries.last() {
                Some(last) if full_page => after = last.name.clone(),
                _ => break,
            }
        }
        Ok(names)
    }

    /// The open image `name`, opening it (and reading its header) on first
    /// use; a cached image is refreshed if the watch said it changed. The
    /// file system passes only names it can show (`fs::names`).
    pub fn image(&self, name: &str) -> ImageResult<Arc<Image>> {
        if self.only.as_deref().is_some_and(|o| o != name) {
            return Err(ImageError::NotFound(name.to_string()));
        }
        if let Some(image) = self.open.lock().get(name).cloned() {
            image.current_info()?;
            return Ok(image);
        }
        let image = Image::open(self.store.clone(), &self.cache, name)?;
        let mut open = self.open.lock();
        Ok(open.entry(name.to_string()).or_insert(image).clone())
    }

    /// Forgets a cached image (after it was found gone or corrupt), so the
    /// next use opens it afresh.
    pub fn forget(&self, name: &str) {
        self.open.lock().remove(name);
    }
}

impl Pool {
    /// Creates image `name` (size 0) and opens it.
    pub fn create(&self, name: &str, opts: &CreateOptions) -> ImageResult<Arc<Image>> {
        if self.only.is_some() {
            return Err(ImageError::ReadOnly {
                image: name.to_string(),
                reason: "mounted with --image: no other image can be created".into(),
            });
        }
        admin::create_image(&*self.store, name, 0, opts)?;
        self.image(name)
    }

    /// Closes our copy (flush, give back the lock), then removes the image
    /// as `rbd rm` does. The caller makes sure no file of it is open.
    pub fn remove(&self, name: &str) -> ImageResult<()> {
        if let Some(image) = self.open.lock().remove(name) {
            image.close()?;
        }
        admin::remove_image(&*self.store, name)
    }

    /// Renames an image as `rbd rename` does.
    pub fn rename(&self, old: &str, new: &str) -> ImageResult<()> {
        if self.only.is_some() {
            return Err(ImageError::ReadOnly {
                image: old.to_string(),
                reason: "mounted with --image".into(),
            });
        }
        if let Some(image) = self.open.lock().remove(old) {
            image.close()?;
        }
        admin::rename_image(&*self.store, old, new)
    }

    /// Makes image `child` a clone of `parent@snap` as `rbd clone` does
    /// (see [`admin::clone_image`]), in the clone format `rbd clone` would
    /// choose here; for a format-1 clone the snapshot is protected first
    /// if it is not. The child's features are the mount's `image_features`
    /// if given, else the parent's; its object size is the parent's unless
    /// the mount asks for another than the default.
    pub fn clone_image(
        &self,
        parent: &str,
        snap: &str,
        child: &str,
        create: &CreateOptions,
    ) -> ImageResult<()> {
        self.clone_image_into(self, parent, snap, child, create)
    }

    /// Clones PARENT@SNAP of this pool into image `child` of `target` (this
    /// pool, or another pool or namespace of the same cluster).
    pub fn clone_image_into(
        &self,
        target: &Pool,
        parent: &str,
        snap: &str,
        child: &str,
        create: &CreateOptions,
    ) -> ImageResult<()> {
        if self.only.is_some() || target.only.is_some() {
            return Err(ImageError::ReadOnly {
                image: child.to_string(),
                reason: "mounted with --image: no other image can be created".into(),
            });
        }
        let image = self.image(parent)?;
        let info = image.refresh()?;
        if info.snapshot(snap).is_none() {
            return Err(ImageError::NoSnapshot {
                image: parent.to_string(),
                snap: snap.to_string(),
            });
        }
        let clone_format = admin::default_clone_format(&*target.store, parent)?;
        let crosses_namespaces = self.store.namespace() != target.store.namespace();
        if clone_format == 1
            && !crosses_namespaces
            && info.id.is_some()
            && !image.snap_is_protected(snap)?
        {
            image.snap_set_protected(snap, true)?;
        }
        let info = image.refresh()?;
        let opts = admin::CloneOptions {
            clone_format,
            features: create.features,
            order: (create.order != admin::DEFAULT_ORDER).then_some(create.order),
            data_pool: create.data_pool,
        };
        admin::clone_image(
            &*target.store,
            &*self.store,
            &info,
            parent,
            snap,
            child,
            &opts,
        )
    }

    /// Writes back every open image's dirty data and gives back exclusive
    /// locks (unmount).
    pub fn close_all(&self) -> Result<(), ImageError> {
        let images: Vec<Arc<Image>> = self.open.lock().values().cloned().collect();
        let mut first = Ok(());
        for image in images {
            if let Err(e) = image.close() {
                warn!("flush {}: {e}", image.name());
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}
