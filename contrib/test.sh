#!/usr/bin/env bash
# Run all the tests: make sure the local test cluster is up (it is left
# running for the next run; `contrib/cluster.sh stop` stops it), then
# `cargo test --release --features cluster-tests` (the real-cluster suites
# are built only with that feature) with any extra arguments passed through, e.g.
#
#   contrib/test.sh
#   contrib/test.sh --test format1 -- --nocapture
#
# The cluster directory is ${RBDFS_CLUSTER_DIR:-/var/tmp/rbdfs-cluster};
# the integration tests find it through RBDFS_TEST_CONF.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

dir=${RBDFS_CLUSTER_DIR:-/var/tmp/rbdfs-cluster}
"$root/contrib/cluster.sh" start "$dir" >/dev/null

export RBDFS_TEST_CONF
RBDFS_TEST_CONF=$(realpath -m -- "$dir")/ceph.conf
echo "test.sh: cluster up, RBDFS_TEST_CONF=$RBDFS_TEST_CONF" >&2

exec cargo test --release --features cluster-tests "$@"
