//! The object-class machinery of the in-memory store: the view of one
//! object a method works on (data, omap, xattrs), who calls, and the
//! dispatch of `class.method` to [`cls_rbd`](super::cls_rbd) and
//! [`cls_lock`](super::cls_lock).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::FormatError;
use crate::format::decode::Decoder;
use crate::format::v2::{EntityAddr, Utime};

/// A method's failure: a positive errno, as the OSD returns `-errno`.
pub type ClsResult<T> = Result<T, i32>;

/// Who calls the method (cls_get_request_origin) and when.
pub struct Caller {
    pub gid: u64,
    pub addr: EntityAddr,
    pub now: Utime,
}

pub fn now() -> Utime {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Utime {
        sec: d.as_secs() as u32,
        nsec: d.subsec_nanos(),
    }
}

/// A copy of one object's head that a method reads and changes; the store
/// keeps the changes only when the method succeeds.
pub struct ClsObject {
    /// None: the object does not exist.
    pub data: Option<Vec<u8>>,
    pub omap: BTreeMap<String, Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub changed: bool,
}

impl ClsObject {
    pub fn exists(&self) -> bool {
        self.data.is_some()
    }

    /// `cls_cxx_stat`: ENOENT when the object does not exist.
    pub fn check_exists(&self) -> ClsResult<()> {
        if self.exists() {
            Ok(())
        } else {
            Err(libc::ENOENT)
        }
    }

    fn touch(&mut self) {
        self.changed = true;
        if self.data.is_none() {
            self.data = Some(Vec::new());
        }
    }

    /// `cls_cxx_read` of the whole object.
    pub fn read(&self) -> ClsResult<&[u8]> {
        self.data.as_deref().ok_or(libc::ENOENT)
    }

    /// `cls_cxx_write_full` (creates the object).
    pub fn write_full(&mut self, data: Vec<u8>) {
        self.touch();
        self.data = Some(data);
    }

    /// `cls_cxx_map_get_val`: ENOENT when the object or the key is missing.
    pub fn omap_get(&self, key: &str) -> ClsResult<&[u8]> {
        self.check_exists()?;
        self.omap.get(key).map(Vec::as_slice).ok_or(libc::ENOENT)
    }

    /// `cls_cxx_map_set_val` (creates the object).
    pub fn omap_set(&mut self, key: &str, value: Vec<u8>) {
        self.touch();
        self.omap.insert(key.to_string(), value);
    }

    pub fn omap_remove(&mut self, key: &str) -> ClsResult<()> {
        self.check_exists()?;
        self.changed = true;
        self.omap.remove(key).map(drop).ok_or(libc::ENOENT)
    }

    /// `cls_cxx_getxattr`: ENOENT without the object, ENODATA without the
    /// attribute.
    pub fn xattr_get(&self, key: &str) -> ClsResult<&[u8]> {
        self.check_exists()?;
        self.xattrs.get(key).map(Vec::as_slice).ok_or(libc::ENODATA)
    }

    /// `cls_cxx_setxattr` (creates the object).
    pub fn xattr_set(&mut self, key: &str, value: Vec<u8>) {
        self.touch();
        self.xattrs.insert(key.to_string(), value);
    }
}

/// Undecodable input: the OSD's classes answer EINVAL.
pub fn bad_input(_: FormatError) -> i32 {
    libc::EINVAL
}

/// Undecodable stored state: the classes answer EIO.
pub fn corrupt(_: FormatError) -> i32 {
    libc::EIO
}

/// Input must be consumed exactly.
pub fn done(d: &Decoder<'_>) -> ClsResult<()> {
    if d.is_empty() {
        Ok(())
    } else {
        Err(libc::EINVAL)
    }
}

/// Runs `class.method`; EOPNOTSUPP for a method the store does not know
/// (what the OSD answers for an unknown class or method).
pub fn call(
    class: &str,
    method: &str,
    obj: &mut ClsObject,
    caller: &Caller,
    input: &[u8],
) -> ClsResult<Vec<u8>> {
    match class {
        "rbd" => super::cls_rbd::call(method, obj, caller, input),
        "lock" => super::cls_lock::call(method, obj, caller, input),
        _ => Err(libc::EOPNOTSUPP),
    }
}
