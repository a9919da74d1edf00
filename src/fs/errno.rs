//! The filesystem's error: an errno for the kernel, with what failed (for
//! the one log line the FUSE adapter writes) and whether it is worth a
//! warning. No fuser types: the filesystem logic is usable without FUSE.

use std::fmt;

use crate::image::ImageError;

/// An errno value (positive, as libc's), what failed, and whether the
/// error is an expected outcome (a name that does not exist, a read-only
/// file, a full image) or something an operator should see.
///
/// Two values are equal when their errno values are.
#[derive(Clone)]
pub struct Errno {
    code: i32,
    detail: Option<String>,
    expected: bool,
}

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno::new(libc::$name);)*
        }
    };
}

errnos!(
    EBADF, EBUSY, EDQUOT, EEXIST, EFBIG, EINVAL, EIO, EISDIR, ENODATA, ENOENT, ENOSPC, ENOTDIR,
    ENXIO, EOPNOTSUPP, EPERM, ERANGE, EROFS, EXDEV,
);

impl Errno {
    /// An expected errno without detail: the filesystem's own refusals.
    pub const fn new(code: i32) -> Errno {
        Errno {
            code,
            detail: None,
            expected: true,
        }
    }

    /// The errno value of an image-layer error, with what was being done.
    pub fn image(what: &str, e: &ImageError) -> Errno {
        Errno {
            code: e.errno(),
            detail: Some(format!("{what}: {e}")),
            expected: e.is_expected(),
        }
    }

    /// Says what failed (for the log line).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Errno {
        self.detail = Some(detail.into());
        self
    }

    /// Marks the error as one an operator should see (logged as a warning).
    pub fn unexpected(mut self) -> Errno {
        self.expected = false;
        self
    }

    /// The same detail and level with another errno value.
    pub fn with_code(mut self, code: i32) -> Errno {
        self.code = code;
        self
    }

    pub fn code(&self) -> i32 {
        self.code
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn is_expected(&self) -> bool {
        self.expected
    }
}

impl PartialEq for Errno {
    fn eq(&self, other: &Errno) -> bool {
        self.code == other.code
    }
}

impl Eq for Errno {}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `ENOENT (2): open img: image img: no such image`.
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = name(self.code);
        write!(f, "{name} ({})", self.code)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

fn name(code: i32) -> &'static str {
    match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EDQUOT => "EDQUOT",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ENOTEMPTY => "ENOTEMPTY",
        _ => "errno",
    }
}
