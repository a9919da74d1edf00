//! Bytes ↔ structures for the on-disk RBD format. No I/O happens here, and
//! no input, however hostile, makes these functions panic.

pub mod crc;
pub mod decode;
pub mod diff;
pub mod partitions;
pub mod snap;
pub mod tmap;
pub mod v1;
pub mod v2;

use thiserror::Error;

pub use self::snap::{NOSNAP, SnapContext, SnapId};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{what} is truncated: need {need} bytes at offset {offset}, have {have}")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("{what} is invalid: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl FormatError {
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        FormatError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// Smallest and largest object order librbd accepts (4 KiB .. 32 MiB).
pub const MIN_ORDER: u8 = 12;
pub const MAX_ORDER: u8 = 25;

/// Snapshot records an image header may list before we call it corrupt.
/// librbd has no hard limit, but a header this large would be a multi-MiB
/// object; refusing it bounds what hostile metadata can make us allocate.
pub const MAX_SNAPSHOTS: usize = 65536;

/// Longest snapshot or image name we accept (librbd's RBD_MAX_NAME_LEN is
/// not enforced on snapshots; NAME_MAX is what the filesystem can show).
pub const MAX_NAME_LEN: usize = 255;

/// One snapshot as the header records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: u64,
    pub name: String,
    pub size: u64,
}
