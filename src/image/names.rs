//! The rules for the names rbdfs creates and opens, and the names an
//! rbdfs mount keeps for its own directories.

use crate::error::{ImageError, ImageResult};
use crate::format::MAX_NAME_LEN;

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
