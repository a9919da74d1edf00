#!/usr/bin/env bash
# Long run of the random-operation model test (tests/model.rs) against the
# local test cluster: OPS operations (default 100,000) on a format-1 and a
# format-2 image, with a printed seed for replay.
#
#   contrib/model.sh [OPS] [SEED] [TEST...]
#
# SEED is decimal or 0x-hex (default: random). TEST defaults to both
# model_format1 and model_format2 (run in parallel); name one to replay a
# failure. Needs the cluster (contrib/cluster.sh start); RBDFS_TEST_CONF
# defaults to the shared one. Each op costs ~15 ms on average (snapshot
# create/remove ~0.7 s each, see the per-op table the test prints), so
# 100,000 ops take about 25 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ops=${1:-100000}
seed=${2:-0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')}
shift $(( $# < 2 ? $# : 2 ))
tests=(model_format1 model_format2)
[[ $# -eq 0 ]] || tests=("$@")
export RBDFS_TEST_CONF=${RBDFS_TEST_CONF:-/var/tmp/rbdfs-cluster/ceph.conf}
export RBDFS_MODEL_OPS=$ops RBDFS_TEST_SEED=$seed CI=${CI:-true}
echo "model: $ops ops, RBDFS_TEST_SEED=$seed, tests: ${tests[*]}, conf $RBDFS_TEST_CONF"
start=$(date +%s)
rc=0
cargo test --release --features cluster-tests --test model -- --exact "${tests[@]}" || rc=$?
echo "model: ops=$ops seed=$seed tests=${tests[*]} result=$([[ $rc = 0 ]] && echo PASSED || echo FAILED) duration=$(( $(date +%s) - start ))s"
exit $rc
