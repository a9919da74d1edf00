#!/usr/bin/env bash
# Long fuzzing run of every decoder (tests/fuzz_decoders.rs): CASES inputs
# per decoder (default 1,000,000), with a printed seed for replay.
#
#   contrib/fuzz.sh [CASES] [SEED-HEX]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cases=${1:-1000000}
seed=${2:-$(printf '%x' "$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')")}
echo "fuzz: $cases inputs per decoder, RBDFS_FUZZ_SEED=$seed"
start=$(date +%s)
RBDFS_FUZZ_CASES=$cases RBDFS_FUZZ_SEED=$seed cargo test --release --test fuzz_decoders -- --test-threads=7
echo "fuzz: done in $(( $(date +%s) - start )) s"
