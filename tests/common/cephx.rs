//! CephX users of the test's own, for suites that mount as a narrow user
//! the way operators do in production.

use std::path::PathBuf;

use super::cluster::{Cluster, unique_name};

/// A CephX user (mon `profile rbd`, the given OSD caps) that exists for the
/// test's lifetime; its keyring lives in a temporary directory.
pub struct CephxUser {
    cluster: Cluster,
    name: String,
    keyring: PathBuf,
    _dir: tempfile::TempDir,
}

impl CephxUser {
    /// `ceph auth get-or-create client.<unique name from tag>`.
    pub fn new(cluster: &Cluster, tag: &str, osd_caps: &str) -> CephxUser {
        let name = unique_name(tag);
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring");
        cluster.ceph(&[
            "auth",
            "get-or-create",
            &format!("client.{name}"),
            "mon",
            "profile rbd",
            "osd",
            osd_caps,
            "-o",
            keyring.to_str().unwrap(),
        ]);
        CephxUser {
            cluster: cluster.clone(),
            name,
            keyring,
            _dir: dir,
        }
    }

    /// The rbdfs mount options that authenticate as this user.
    pub fn mount_args(&self) -> Vec<String> {
        vec![
            "--id".into(),
            self.name.clone(),
            "--keyring".into(),
            self.keyring.to_str().unwrap().into(),
        ]
    }
}

impl Drop for CephxUser {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .ceph(&["auth", "rm", &format!("client.{}", self.name)]);
    }
}
