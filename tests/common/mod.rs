//! Shared harness for rbdfs integration tests: talks to the local test
//! cluster through the `rbd`/`rados` CLIs (the oracle), mounts rbdfs as a
//! foreground child process, and offers a seeded PRNG plus byte/errno checks.
//!
//! Environment:
//! - `RBDFS_TEST_CONF`: cluster conf (default `/var/tmp/rbdfs-cluster/ceph.conf`).
//! - The suites that use this harness are built only with the
//!   `cluster-tests` feature (contrib/test.sh and CI turn it on); there an
//!   unreachable cluster or a failed mount is always a test failure.
//! - `RBDFS_TEST_SEED`: reproduce a run's random data/offsets.
#![allow(dead_code)] // each test binary uses a different subset

pub mod json;

mod cephx;
mod cluster;
mod data;
mod mount;
mod own_cluster;
mod process;
mod xattr;

// Re-exported so `common::X` and `use common::*;` reach every pub item as
// before the split; a binary that uses nothing from one of these would
// otherwise warn about the unused glob.
#[allow(unused_imports)]
pub use cephx::*;
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use data::*;
#[allow(unused_imports)]
pub use mount::*;
#[allow(unused_imports)]
pub use own_cluster::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use xattr::*;
