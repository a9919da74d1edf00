//! librados calls and structs the `ceph` crate lacks or declares wrongly.

use ceph::rados::rados_ioctx_t;

/// `struct rados_pool_stat_t` as librados 16 (Pacific) defines it. The
/// `ceph` crate's copy lacks the last four fields, so librados wrote 32
/// bytes past it: a stack smash on every `statfs`. Declared here with its
/// real size, with a binding of our own.
#[repr(C)]
#[derive(Default)]
pub(super) struct PoolStat {
    pub(super) num_bytes: u64,
    pub(super) num_kb: u64,
    pub(super) num_objects: u64,
    pub(super) num_object_clones: u64,
    pub(super) num_object_copies: u64,
    pub(super) num_objects_missing_on_primary: u64,
    pub(super) num_objects_unfound: u64,
    pub(super) num_objects_degraded: u64,
    pub(super) num_rd: u64,
    pub(super) num_rd_kb: u64,
    pub(super) num_wr: u64,
    pub(super) num_wr_kb: u64,
    pub(super) num_user_bytes: u64,
    pub(super) compressed_bytes_orig: u64,
    pub(super) compressed_bytes: u64,
    pub(super) compressed_bytes_alloc: u64,
}

#[link(name = "rados")]
unsafe extern "C" {
    /// With our [`PoolStat`], of the real size.
    pub(super) fn rados_ioctx_pool_stat(
        io: ceph::rados::rados_ioctx_t,
        stats: *mut PoolStat,
    ) -> libc::c_int;
    /// Not in the `ceph` crate's bindings (librados 12+).
    pub(super) fn rados_set_pool_full_try(io: ceph::rados::rados_ioctx_t);
    /// Not in the `ceph` crate's bindings (librados 13+).
    pub(super) fn rados_get_min_compatible_client(
        cluster: ceph::rados::rados_t,
        min_compat_client: *mut i8,
        require_min_compat_client: *mut i8,
    ) -> libc::c_int;
    /// Not in the `ceph` crate's bindings (librados 12+): the
    /// applications enabled on the pool, NUL-separated.
    pub(super) fn rados_application_list(
        io: ceph::rados::rados_ioctx_t,
        values: *mut libc::c_char,
        values_len: *mut libc::size_t,
    ) -> libc::c_int;
    /// Not in the `ceph` crate's bindings (librados 14+): this client's
    /// addresses, a string to free with `rados_buffer_free`.
    pub(super) fn rados_getaddrs(
        cluster: ceph::rados::rados_t,
        addrs: *mut *mut libc::c_char,
    ) -> libc::c_int;
}

/// Every I/O context we make sends its operations even when the pool or
/// cluster is flagged full (quota reached, OSDs full): a write then fails
/// at once with EDQUOT or ENOSPC, which we can report, instead of waiting
/// for space until `rados_timeout`; deletes (removing an image or snapshot
/// to make room) go through, as `rbd rm` does.
pub(super) fn full_try(io: rados_ioctx_t) {
    // SAFETY: io is a live I/O context that we just created; the call only
    // sets a flag on it.
    unsafe { rados_set_pool_full_try(io) };
}
