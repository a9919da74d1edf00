//! The error of image operations, and of the object I/O the cache does
//! for an image (the cache's `ObjectIo`): it sits below the
//! cache so that the cache and the image share it without importing each
//! other. `image` re-exports it.

use thiserror::Error;

use crate::format::FormatError;
use crate::store::StoreError;

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
    #[error("image {image} cannot be opened: {reason}")]
    Unsupported { image: String, reason: String },
    #[error("image {0} already exists")]
    Exists(String),
    #[error("image {image} is not empty: {reason}")]
    NotEmpty { image: String, reason: String },
    #[error("image {image} is busy: {reason}")]
    Busy { image: String, reason: String },
    #[error("image {image}: invalid argument: {reason}")]
    InvalidArgument { image: String, reason: String },
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
            ImageError::Unsupported { .. } => libc::EOPNOTSUPP,
            ImageError::Exists(_) => libc::EEXIST,
            ImageError::NotEmpty { .. } => libc::ENOTEMPTY,
            ImageError::Busy { .. } => libc::EBUSY,
            ImageError::InvalidArgument { .. } => libc::EINVAL,
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
                | ImageError::Exists(_)
                | ImageError::NotEmpty { .. }
                | ImageError::Busy { .. }
                | ImageError::InvalidArgument { .. }
        )
    }
}

pub type ImageResult<T> = Result<T, ImageError>;
