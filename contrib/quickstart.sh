#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to a mounted pool:
# installs the packages, builds rbdfs, starts a throwaway local cluster
# (contrib/cluster.sh), creates a format-1 sample image from random data
# and mounts the pool. Safe to run again.
#
#   contrib/quickstart.sh [MOUNTPOINT]      (default /mnt/rbdfs)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mnt=${1:-/mnt/rbdfs}
dir=${RBDFS_CLUSTER_DIR:-/var/tmp/rbdfs-cluster}
conf=$dir/ceph.conf

say() { printf '\n== %s\n' "$*"; }

if [[ ${RBDFS_SKIP_INSTALL:-0} != 1 ]]; then
    say "installing packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        ceph-mon ceph-osd ceph-mgr ceph-common librados-dev fuse3 rbd-fuse fio \
        e2fsprogs util-linux fdisk dosfstools mtools kmod gcc rsync rsyslog >/dev/null
fi
if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

say "building rbdfs (release)"
cargo build --release --quiet
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/rbdfs" /usr/local/bin/rbdfs

say "starting the local cluster in $dir"
contrib/cluster.sh start "$dir"

if ! rbd -c "$conf" info rbd/sample >/dev/null 2>&1; then
    say "creating the sample format-1 image rbd/sample (64 MiB of random data)"
    head -c $((64 << 20)) /dev/urandom >"$dir/sample.img"
    RBD_FORCE_ALLOW_V1=1 rbd -c "$conf" import --image-format 1 --no-progress \
        "$dir/sample.img" rbd/sample 2>/dev/null
else
    # Kept from an earlier run, perhaps written since: the reference copy
    # is what librbd reads now, so the `cmp` below stays a true check.
    say "keeping the existing image rbd/sample; $dir/sample.img is its rbd export"
    rbd -c "$conf" export --no-progress rbd/sample "$dir/sample.img.new"
    mv "$dir/sample.img.new" "$dir/sample.img"
fi

say "mounting pool rbd on $mnt"
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
    umount "$mnt" || umount -l "$mnt"
fi
rbdfs mount -c "$conf" rbd "$mnt"

ls -l "$mnt"
cat <<EOT

The pool is mounted. Try:
  cmp $mnt/sample $dir/sample.img && echo identical
  dd if=/dev/urandom of=$mnt/sample bs=1M count=4 seek=8 conv=notrunc,fsync
  rbd -c $conf snap create rbd/sample@before && ls -l $mnt/.snap/sample/
  umount $mnt
EOT
