//! The images of one pool: the directory listing and a table of opened
//! images shared by every file handle.

use std::collections::HashMap;
use std::sync::Arc;

use log::warn;
use parking_lot::Mutex;

use crate::cache::Cache;
use crate::format::tmap::Tmap;
use crate::format::valid_file_name;
use crate::image::{Image, ImageError, ImageResult};
use crate::store::{ObjectStore, StoreError};

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

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Image names from `rbd_directory`, sorted. Entries that cannot be file
    /// names are left out with a log line; an undecodable directory is an
    /// error for the listing only (opening a known name still works).
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
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
        let mut names = Vec::with_capacity(tmap.entries.len());
        for (key, _) in tmap.entries {
            match String::from_utf8(key) {
                Ok(name) if valid_file_name(&name) => names.push(name),
                Ok(name) => {
                    warn!("{DIRECTORY}: image name {name:?} cannot be a file name; skipped")
                }
                Err(e) => warn!(
                    "{DIRECTORY}: image name {:?} is not UTF-8; skipped",
                    e.as_bytes()
                ),
            }
        }
        if let Some(only) = &self.only {
            names.retain(|n| n == only);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The open image `name`, opening it (and reading its header) on first
    /// use; a cached image is refreshed if the watch said it changed.
    pub fn image(&self, name: &str) -> ImageResult<Arc<Image>> {
        if self.only.as_deref().is_some_and(|o| o != name) || !valid_file_name(name) {
            return Err(ImageError::NotFound(name.to_string()));
        }
        if let Some(image) = self.open.lock().get(name).cloned() {
            image.current_info()?;
            return Ok(image);
        }
        let image = Arc::new(Image::open(self.store.clone(), &self.cache, name)?);
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
    /// Writes back every open image's dirty data (unmount).
    pub fn flush_all(&self) -> Result<(), ImageError> {
        let images: Vec<Arc<Image>> = self.open.lock().values().cloned().collect();
        let mut first = Ok(());
        for image in images {
            if let Err(e) = image.flush() {
                warn!("flush {}: {e}", image.name());
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}
