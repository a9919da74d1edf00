//! What may be a file name in our tree. The RBD-level rules (what an image
//! or snapshot may be called) are the image layer's
//! ([`crate::image::check_name`]); these are the file system's: a name the
//! kernel can show and we can look up.

use std::ffi::OsStr;

/// Name of the directory that holds the snapshots; in the root, no image
/// can be shown under it.
pub const SNAP_DIR: &str = ".snap";

/// Name of the directory that holds the diff streams (incremental
/// backups); reserved in the root as [`SNAP_DIR`] is.
pub const DIFF_DIR: &str = ".diff";

/// Name of the directory that holds the partitions as files
/// (`parts.rs`); reserved in the root as [`SNAP_DIR`] is.
pub const PART_DIR: &str = ".part";

/// Whether `name` is one of the root's directories, never an image's name.
pub fn is_reserved_root_name(name: &str) -> bool {
    [SNAP_DIR, DIFF_DIR, PART_DIR].contains(&name)
}

/// In `.diff/IMAGE/SNAP`: the stream from the beginning.
pub const DIFF_FULL: &str = "full";

/// In `.diff/IMAGE/SNAP`: `since-FROM` is the stream since snapshot FROM.
pub const DIFF_SINCE: &str = "since-";

/// Longest file name (NAME_MAX), as statfs reports it.
pub const NAME_MAX: usize = 255;

/// `name` as a file name of the tree: UTF-8 (RBD names are strings),
/// non-empty, at most [`NAME_MAX`] bytes, no `/` or NUL, not `.` or `..`.
/// Whether `.snap` may appear depends on the directory (it is reserved in
/// the root only); callers decide that.
pub fn file_name(name: &OsStr) -> Option<&str> {
    name.to_str().filter(|n| is_file_name(n))
}

/// Whether `name` can be a file name of the tree (see [`file_name`]).
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
        for good in ["a", ".snap", ".snapx", "a b", "x@y", &"x".repeat(255), "ü"] {
            assert!(is_file_name(good), "{good:?}");
        }
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(file_name(OsStr::from_bytes(b"\xff")), None);
    }

    /// The image layer refuses to create an image that the tree could not
    /// show in the root.
    #[test]
    fn the_image_layer_reserves_the_snap_dir() {
        use crate::image::{NameKind, check_name};
        assert_eq!(crate::image::RESERVED_IMAGE_NAME, SNAP_DIR);
        assert_eq!(crate::image::RESERVED_DIFF_NAME, DIFF_DIR);
        assert!(check_name(NameKind::Image, SNAP_DIR).is_err());
        assert!(check_name(NameKind::Image, DIFF_DIR).is_err());
        assert_eq!(crate::image::RESERVED_PART_NAME, PART_DIR);
        assert!(check_name(NameKind::Image, PART_DIR).is_err());
        for name in [SNAP_DIR, DIFF_DIR, PART_DIR] {
            assert!(is_reserved_root_name(name));
        }
        assert!(!is_reserved_root_name(".parts"));
        // A snapshot may be called `.snap`; `@` separates image and snap.
        check_name(NameKind::Snapshot, SNAP_DIR).unwrap();
        check_name(NameKind::Image, "x@y").unwrap();
        let e = check_name(NameKind::Snapshot, "x@y").unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
    }
}
