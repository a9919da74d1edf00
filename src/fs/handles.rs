//! Open files: the handle table, and flushing a handle's writes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::parts::PartRange;
use super::{Errno, RbdFs};
use crate::image::{DiffPlan, Image};
use crate::store::{NOSNAP, SnapId};

/// A `.diff` file's image and stream.
pub(super) type DiffHandle = (Arc<Image>, Arc<DiffPlan>);

/// An open file: the image and the snap id it reads at (NOSNAP: the head).
pub(super) struct Handle {
    image: Arc<Image>,
    snap: SnapId,
    /// Opened by creating the image: it grows by writing even on a
    /// `fixed_size` mount, so `cp`/`dd` into a new name work there.
    created: bool,
    /// A `.diff` file: the stream it reads (its snap is the to-snapshot).
    diff: Option<Arc<DiffPlan>>,
    /// A partition file: the range of the image it is.
    part: Option<PartRange>,
    /// A close(2) flushed it: its release is on the way (see
    /// `is_still_open`).
    closing: bool,
}

impl RbdFs {
    pub(super) fn handle(&self, fh: u64) -> Result<(Arc<Image>, SnapId), Errno> {
        self.handles
            .lock()
            .get(&fh)
            .map(|h| (h.image.clone(), h.snap))
            .ok_or(Errno::EBADF)
    }

    /// The diff stream behind `fh`, if it is a `.diff` file.
    pub(super) fn diff_handle(&self, fh: u64) -> Result<Option<DiffHandle>, Errno> {
        let handles = self.handles.lock();
        let h = handles.get(&fh).ok_or(Errno::EBADF)?;
        Ok(h.diff.as_ref().map(|d| (h.image.clone(), d.clone())))
    }

    pub(super) fn add_diff_handle(&self, image: Arc<Image>, plan: Arc<DiffPlan>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let snap = plan.to.id;
        self.handles.lock().insert(
            fh,
            Handle {
                image,
                snap,
                created: false,
                diff: Some(plan),
                part: None,
                closing: false,
            },
        );
        fh
    }

    pub(super) fn add_part_handle(&self, image: Arc<Image>, snap: SnapId, part: PartRange) -> u64 {
        let fh = self.add_handle(image, snap);
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.part = Some(part);
        }
        fh
    }

    /// The image, snap and range behind `fh`, if it is a partition file.
    pub(super) fn part_handle(&self, fh: u64) -> Option<(Arc<Image>, SnapId, PartRange)> {
        let handles = self.handles.lock();
        let h = handles.get(&fh)?;
        h.part.map(|p| (h.image.clone(), h.snap, p))
    }

    /// Whether writes and fallocate through `fh` may grow the image: on
    /// every handle of the head, except on a `fixed_size` mount, where only
    /// the handle that created the image grows it.
    pub(super) fn may_grow(&self, fh: u64) -> bool {
        !self.opts.fixed_size || self.handles.lock().get(&fh).is_some_and(|h| h.created)
    }

    /// Whether a file of image `name` (or of its head only) is open, after
    /// giving the releases of files that
    /// a close(2) has flushed a moment: close returns after FUSE's flush,
    /// and the release that drops the handle follows asynchronously, so
    /// `cp a IMG && rm IMG` (or `mv`, or a rollback) must not meet EBUSY
    /// for a file that is already closed. Files not being closed answer at
    /// once.
    pub(super) fn is_still_open(&self, name: &str, head_only: bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let (open, closing) = {
                let handles = self.handles.lock();
                let mut of_image = handles
                    .values()
                    .filter(|h| h.image.name() == name && (!head_only || h.snap == NOSNAP))
                    .peekable();
                let open = of_image.peek().is_some();
                (open, open && of_image.all(|h| h.closing))
            };
            if !closing || std::time::Instant::now() >= deadline {
                return open;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// close(2) of `fh` (FUSE flush): its release follows.
    pub(super) fn mark_closing(&self, fh: u64) {
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.closing = true;
        }
    }

    pub(super) fn flush_handle(&self, fh: u64) -> Result<(), Errno> {
        let (image, snap) = self.handle(fh)?;
        if snap != NOSNAP {
            return Ok(());
        }
        image.flush().map_err(|e| {
            // As the kernel reports failed write-back of dirty pages: EIO,
            // except for a full pool or quota, which the user can act on.
            match Errno::image(&format!("flush {}", image.name()), &e) {
                e if e == Errno::ENOSPC || e == Errno::EDQUOT => e,
                e => e.with_code(libc::EIO),
            }
        })
    }

    pub(super) fn add_handle(&self, image: Arc<Image>, snap: SnapId) -> u64 {
        self.add_handle_with(image, snap, false)
    }

    pub(super) fn add_handle_with(&self, image: Arc<Image>, snap: SnapId, created: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            Handle {
                image,
                snap,
                created,
                diff: None,
                part: None,
                closing: false,
            },
        );
        fh
    }
}
