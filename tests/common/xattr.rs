//! Extended attributes: getxattr/listxattr through libc.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(s: &[u8]) -> CString {
    CString::new(s).unwrap()
}

/// getxattr (`name`) or listxattr (None): size query, then the value.
pub fn xattr(p: &Path, name: Option<&str>) -> io::Result<Vec<u8>> {
    let (cp, cn) = (
        cstr(p.as_os_str().as_bytes()),
        cstr(name.unwrap_or("").as_bytes()),
    );
    // SAFETY: `cp` and `cn` are NUL-terminated CStrings alive across the
    // call, and the kernel writes at most `len` bytes into `buf`.
    let call = |buf: &mut [u8]| unsafe {
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        match name {
            Some(_) => libc::getxattr(cp.as_ptr(), cn.as_ptr(), ptr.cast(), len),
            None => libc::listxattr(cp.as_ptr(), ptr.cast(), len),
        }
    };
    let n = call(&mut []);
    let mut buf = vec![0u8; n.max(0) as usize];
    let m = if n < 0 { n } else { call(&mut buf) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(m as usize);
    Ok(buf)
}
