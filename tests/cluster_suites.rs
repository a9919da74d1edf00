//! Says plainly, in the test output, whether the real-cluster suites ran.
//! They are built only with the `cluster-tests` feature (contrib/test.sh
//! and CI); a plain `cargo test` runs the in-process suites and lists this
//! one line as ignored, instead of counting cluster tests as passed.

#[cfg(not(feature = "cluster-tests"))]
#[test]
#[ignore = "NOT RUN: the real-cluster suites (admin_ops cache core_format1 diff_files disk_images faults file_semantics format2 format2_codecs images_as_files model namespaces restricted_users snapshots trouble) need a Ceph cluster and a FUSE mount; run contrib/test.sh"]
fn real_cluster_suites() {}

#[cfg(feature = "cluster-tests")]
#[test]
fn real_cluster_suites() {
    // Built with the feature: the suites are compiled and run by the same
    // `cargo test`; each fails if it cannot reach its cluster.
}
