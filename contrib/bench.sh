#!/usr/bin/env bash
# Benchmark rbdfs against its references on one freshly started local
# cluster, in one run:
#
#   ceiling   rados bench write/seq, 4 MiB objects and 4 KiB objects (16 in flight)
#   librbd    rbd bench seq 4 MiB and random 4 KiB read/write (16 threads), format-2 image
#   rbd-fuse  Ceph's FUSE client, the fio jobs below on its image file
#   rbdfs     the same fio jobs on the rbdfs image file
#
# fio jobs (identical for rbd-fuse and rbdfs; --direct=1 --ioengine=libaio):
#   seq read / seq write   1 MiB blocks, QD 1 (a dd-like stream), --size=image size, --runtime
#   rand read / rand write 4 KiB blocks, QD 16, one job, --time_based --runtime
#   writes end with an fsync (--end_fsync=1) that is counted in the time
# then a full copy of a snapshot: `cp --sparse=always MNT/.snap/IMG/bench`
# through rbdfs, against `rbd export IMG@bench` (byte-compared: a difference
# fails the run), and `cp` of the (unchanged) head through rbd-fuse, which
# shows no snapshots; an untimed `rbd export` to /dev/null warms the OSD
# for all of them first.
# Then an incremental backup: random 4 MiB writes over 1/8 of the image
# (`rbd bench`), snapshot bench2, and `cp MNT/.diff/IMG/bench2/since-bench`
# against `rbd export-diff --from-snap bench IMG@bench2` (both timed on
# the same stream size, rbdfs's; an untimed export-diff warms the OSD).
#
#   contrib/bench.sh [--size 2G] [--runtime 30] [--cache-mib 64] [--format 1|2]
#                    [--cluster-dir DIR] [--keep-cluster] [--keep-logs] [--rbdfs PATH] [--out FILE]
#
# Without --rbdfs, builds `cargo build --release` first. The cluster lives
# in --cluster-dir (default /var/tmp/rbdfs-bench, mon port
# ${RBDFS_CLUSTER_PORT:-43789}, so it does not disturb the test cluster in
# /var/tmp/rbdfs-cluster). A cluster already running there is reused (and
# left running); otherwise it is started fresh (a directory an earlier
# bench.sh made is destroyed first) and stopped and destroyed at the end,
# unless --keep-cluster. The table goes to stdout (markdown); --out FILE
# also writes it, with the machine description, to FILE. Logs and fio's
# JSON go to a /var/tmp/rbdfs-bench-work.* directory, removed after a
# successful run unless --keep-logs.
# Needs: fio, rbd-fuse, fusermount3, python3, the Ceph CLI tools. Run as root.
set -euo pipefail

prog=$(basename "$0")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat >&2 <<EOF
usage: $prog [--size 2G] [--runtime 30] [--cache-mib 64] [--format 1|2]
             [--cluster-dir DIR] [--keep-cluster] [--keep-logs] [--rbdfs PATH] [--out FILE]
EOF
    exit 2
}

size_arg=2G
runtime=30
cache_mib=64
format=2
cluster_dir=/var/tmp/rbdfs-bench
keep_cluster=0
keep_logs=0
rbdfs_bin=
out_file=
while (($#)); do
    case $1 in
        --size) size_arg=${2:?}; shift 2 ;;
        --runtime) runtime=${2:?}; shift 2 ;;
        --cache-mib) cache_mib=${2:?}; shift 2 ;;
        --format) format=${2:?}; shift 2 ;;
        --cluster-dir) cluster_dir=${2:?}; shift 2 ;;
        --keep-cluster) keep_cluster=1; shift ;;
        --keep-logs) keep_logs=1; shift ;;
        --rbdfs) rbdfs_bin=${2:?}; shift 2 ;;
        --out) out_file=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "$prog: unknown argument $1" >&2; usage ;;
    esac
done

die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: [$(date +%T)] $*" >&2; }

# "2G" -> bytes (binary suffixes, as rbd and fio read them).
to_bytes() {
    local v=$1 n u
    [[ $v =~ ^([0-9]+)([KMGT]?)i?B?$ ]] || die "bad size '$v' (e.g. 512M, 2G)"
    n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]}
    case $u in
        K) echo $((n << 10)) ;; M) echo $((n << 20)) ;;
        G) echo $((n << 30)) ;; T) echo $((n << 40)) ;; *) echo "$n" ;;
    esac
}
size=$(to_bytes "$size_arg")
((size >= 64 << 20 && size % (4 << 20) == 0)) || die "--size must be a multiple of 4 MiB, at least 64 MiB"
if ! [[ $runtime =~ ^[0-9]+$ ]] || ((runtime < 5)); then die "--runtime must be >= 5 (seconds)"; fi
[[ $cache_mib =~ ^[0-9]+$ ]] || die "--cache-mib must be a number (MiB)"
[[ $format = 1 || $format = 2 ]] || die "--format must be 1 or 2"
((EUID == 0)) || die "run as root (FUSE mounts, cluster daemons)"
for c in fio rbd rados rbd-fuse fusermount3 mountpoint python3 timeout; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install fio rbd-fuse fuse3 ceph-common python3)"
done

export RBDFS_CLUSTER_PORT=${RBDFS_CLUSTER_PORT:-43789}
cluster_dir=$(realpath -m -- "$cluster_dir")
conf=$cluster_dir/ceph.conf
pool=rbd
img_fuse=bench-fuse          # format $format: rbd-fuse and rbdfs jobs, snapshot copy
img_librbd=bench-librbd      # format 2: rbd bench
snap=bench
run_name=rbdfs-bench         # rados bench object prefix
obj=$((4 << 20))

# ------------------------------------------------------------------ state
work=
rbdfs_pid=
rbdfuse_pid=
mnt_rbdfs=
mnt_rbdfuse=
started_cluster=0
destroy_cluster=0
reused_cluster=0
ok=0
# results, set by fio_set
rbdfuse_r1m_bw='' rbdfuse_w1m_bw='' rbdfuse_r4k_iops='' rbdfuse_w4k_iops=''
rbdfs_r1m_bw='' rbdfs_w1m_bw='' rbdfs_r4k_iops='' rbdfs_w4k_iops=''

unmount() {   # unmount MNT, then make sure PID (the daemon) is gone
    local mnt=$1 pid=${2:-} i
    if [[ -n $mnt ]] && mountpoint -q "$mnt" 2>/dev/null; then
        timeout 60 fusermount3 -u "$mnt" 2>/dev/null ||
            timeout 30 fusermount3 -uz "$mnt" 2>/dev/null || true
    fi
    [[ -n $pid ]] || return 0
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    unmount "$mnt_rbdfs" "$rbdfs_pid"
    unmount "$mnt_rbdfuse" "$rbdfuse_pid"
    if [[ -n $work && -d $work ]]; then
        rm -f "$work"/copy-* 2>/dev/null
        if ((ok && !keep_logs)); then
            rm -rf "$work"
        else
            echo "$prog: logs and fio output kept in $work" >&2
        fi
    fi
    if ((started_cluster && !keep_cluster)); then
        if ((destroy_cluster)); then
            timeout 120 "$root/contrib/cluster.sh" destroy "$cluster_dir" >/dev/null 2>&1
        else
            timeout 120 "$root/contrib/cluster.sh" stop "$cluster_dir" >/dev/null 2>&1
        fi
    elif ((reused_cluster && !keep_cluster)); then
        # A reused cluster: remove what we created in it.
        for i in "$img_fuse" "$img_librbd"; do
            timeout 60 rbd -c "$conf" snap purge --no-progress "$pool/$i" >/dev/null 2>&1
            timeout 60 rbd -c "$conf" rm --no-progress "$pool/$i" >/dev/null 2>&1
        done
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d /var/tmp/rbdfs-bench-work.XXXXXX)

# Runs a step with a timeout; its output goes to $work/NAME.log, shown on failure.
step() {
    local name=$1 t=$2
    shift 2
    if ! timeout "$t" "$@" >"$work/$name.log" 2>&1; then
        echo "$prog: step '$name' failed or timed out after ${t}s: $*" >&2
        tail -n 30 "$work/$name.log" >&2
        exit 1
    fi
}

now() { date +%s.%N; }

# The measuring functions below run in this shell (a failed step exits the
# script) and leave their result in BW (MiB/s) and IOPS.
BW='' IOPS=''
parse() {  # STEP PYTHON [ARGS]: PYTHON gets $work/STEP as argv[1], prints "MiB/s IOPS"
    local out
    out=$(python3 -c "$2" "$work/$1" "${@:3}") || die "cannot parse the output of step '$1' (see $work/$1.*)"
    read -r BW IOPS <<<"$out"
    [[ -n $BW && -n $IOPS ]] || die "cannot parse the output of step '$1'"
}

# ------------------------------------------------------------------ build
if [[ -z $rbdfs_bin ]]; then
    say "building rbdfs (cargo build --release)"
    (cd "$root" && timeout 1200 cargo build --release --quiet) || die "cargo build failed"
    rbdfs_bin=$root/target/release/rbdfs
    rbdfs_desc="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n $(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        rbdfs_desc+=" plus uncommitted changes"
    fi
    rbdfs_desc="target/release/rbdfs built from $rbdfs_desc"
else
    rbdfs_desc="$rbdfs_bin (given with --rbdfs; repo HEAD is $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown))"
fi
[[ -x $rbdfs_bin ]] || die "$rbdfs_bin is not executable"
rbdfs_bin=$(realpath "$rbdfs_bin")

# ---------------------------------------------------------------- cluster
# .rbdfs-bench marks a cluster directory this script created (and may destroy).
if [[ -f $conf ]] && timeout 60 "$root/contrib/cluster.sh" status "$cluster_dir" >/dev/null 2>&1; then
    say "reusing the cluster running in $cluster_dir (not freshly started)"
    cluster_desc="reused running cluster $cluster_dir"
    reused_cluster=1
else
    if [[ -f $cluster_dir/.rbdfs-bench ]]; then
        say "destroying the earlier bench cluster in $cluster_dir"
        step cluster-destroy 180 "$root/contrib/cluster.sh" destroy "$cluster_dir"
    fi
    [[ -e $cluster_dir ]] || destroy_cluster=1
    say "starting a cluster in $cluster_dir (port $RBDFS_CLUSTER_PORT)"
    started_cluster=1
    step cluster-start 300 "$root/contrib/cluster.sh" start "$cluster_dir"
    ((destroy_cluster == 0)) || touch "$cluster_dir/.rbdfs-bench"
    cluster_desc="freshly started cluster in $cluster_dir (1 mon, 1 bluestore OSD on a sparse file on the VM's disk, pool size 1)"
fi

# --------------------------------------------------------------- machine
ceph_version=$(rbd --version | awk '{print $3}')
machine=$(
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- rbdfs: $rbdfs_desc"
    echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- software: Ceph $ceph_version, $(fio --version), $(fusermount3 --version 2>&1 | head -n1), rbd-fuse on $(ldd "$(command -v rbd-fuse)" | grep -o 'libfuse[^ ]*' | head -n1)"
    echo "- cluster: $cluster_desc"
    echo "- run: image $((size >> 20)) MiB (format $format for the FUSE jobs, format 2 for rbd bench), runtime ${runtime}s, rbdfs cache_size=${cache_mib} MiB"
)
say "machine:"
echo "$machine" >&2

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)

# ------------------------------------------------------------ rados bench
# rados bench's summary (its "MB" are MiB).
rados_bench() {  # STEP SECONDS MODE BS [extra args]
    local name=$1 secs=$2 mode=$3 bs=$4
    shift 4
    step "$name" $((secs + 120)) rados -c "$conf" -p "$pool" bench "$secs" "$mode" \
        -t 16 --run-name "$run_name" --format json "$@" ${bs:+-b "$bs"}
    # Not json.loads: rados prints its cleanup messages into the middle of the JSON.
    parse "$name" '
import re, sys
t = open(sys.argv[1] + ".log").read()
last = lambda k: re.findall(r"\"%s\":\"([0-9.]+)\"" % k, t)[-1]
print(float(last("bandwidth")), float(last("average_iops")))'
}

say "rados bench: 4 MiB objects, write (${runtime}s or $((size >> 20)) MiB) then seq"
rados_bench rados-write-4m "$runtime" write 4M --no-cleanup --max-objects $((size / obj))
rados_w4m_bw=$BW
rados_bench rados-seq-4m "$runtime" seq ""
rados_r4m_bw=$BW
step rados-cleanup-4m 300 rados -c "$conf" -p "$pool" cleanup --run-name "$run_name"
say "rados bench: 4 KiB objects, write (${runtime}s) then seq"
rados_bench rados-write-4k "$runtime" write 4K --no-cleanup
rados_w4k_iops=$IOPS
rados_bench rados-seq-4k "$runtime" seq ""
rados_r4k_iops=$IOPS
step rados-cleanup-4k 600 rados -c "$conf" -p "$pool" cleanup --run-name "$run_name"

# --------------------------------------------------------------- images
for i in "$img_fuse" "$img_librbd"; do
    if timeout 60 rbd -c "$conf" info "$pool/$i" >/dev/null 2>&1; then
        step "rm-$i" 300 sh -c "rbd -c '$conf' snap purge --no-progress '$pool/$i' && rbd -c '$conf' rm --no-progress '$pool/$i'"
    fi
done
step create-librbd 60 rbd -c "$conf" create --size "$((size >> 20))M" "$pool/$img_librbd"
if ((format == 1)); then
    step create-fuse 60 env RBD_FORCE_ALLOW_V1=1 rbd -c "$conf" create --image-format 1 --size "$((size >> 20))M" "$pool/$img_fuse"
else
    step create-fuse 60 rbd -c "$conf" create --image-format 2 --size "$((size >> 20))M" "$pool/$img_fuse"
fi

# ------------------------------------------------------------ rbd bench
# From rbd bench's final "elapsed: S ops: N ops/sec: X bytes/sec: ..." line.
rbd_bench() {  # STEP TYPE PATTERN IOSIZE_BYTES TOTAL_BYTES IMAGE
    local name=$1 type=$2 pattern=$3 ios=$4 total=$5 image=$6
    step "$name" $((runtime * 4 + 300)) rbd -c "$conf" bench --io-type "$type" --io-pattern "$pattern" \
        --io-size "$ios" --io-threads 16 --io-total "$total" "$pool/$image"
    parse "$name" '
import re, sys
m = [re.search(r"ops/sec: *([0-9.]+)", l) for l in open(sys.argv[1] + ".log")]
ops = [float(x.group(1)) for x in m if x][-1]
print(ops * int(sys.argv[2]) / 2**20, ops)' "$ios"
}

# rbd bench has no time limit: the random jobs do about --runtime worth of
# I/O at the rate rados bench just measured for 4 KiB objects (at most the
# image size, at least 1000 ops).
rand_total() {
    python3 -c 'import sys; iops, rt, size = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(max(4096 * 1000, min(size, int(iops * rt) * 4096)))' "$1" "$runtime" "$size"
}

say "prefilling $img_fuse (rbd bench seq write, 4 MiB) so no read is of a hole"
rbd_bench prefill write seq "$obj" "$size" "$img_fuse"
say "rbd bench on $img_librbd (format 2)"
rbd_bench rbd-write-seq-4m write seq "$obj" "$size" "$img_librbd"
librbd_w4m_bw=$BW
rbd_bench rbd-read-seq-4m read seq "$obj" "$size" "$img_librbd"
librbd_r4m_bw=$BW
rbd_bench rbd-write-rand-4k write rand 4096 "$(rand_total "$rados_w4k_iops")" "$img_librbd"
librbd_w4k_iops=$IOPS
rbd_bench rbd-read-rand-4k read rand 4096 "$(rand_total "$rados_r4k_iops")" "$img_librbd"
librbd_r4k_iops=$IOPS

# ------------------------------------------------------------------ fio
# One fio job on FILE; BW/IOPS of its read or write side.
fio_job() {  # STEP FILE RW BS IODEPTH [extra args]
    local name=$1 file=$2 rw=$3 bs=$4 qd=$5
    shift 5
    step "$name" $((runtime * 3 + 300)) fio --name="$name" --filename="$file" \
        --direct=1 --ioengine=libaio --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 \
        --size="$size" --runtime="$runtime" --allow_file_create=0 --fallocate=none \
        --output-format=json --output="$work/$name.json" "$@"
    parse "$name" '
import json, sys
j = json.load(open(sys.argv[1] + ".json"))["jobs"][0]
if j["error"]:
    sys.exit("fio job failed: error %d" % j["error"])
side = j["read" if "read" in sys.argv[2] else "write"]
print(side["bw_bytes"] / 2**20, side["iops"])' "$rw"
}

fio_set() {  # PREFIX FILE -> sets PREFIX_{r1m_bw,w1m_bw,r4k_iops,w4k_iops}
    local p=$1 f=$2
    say "$p: fio seq read 1 MiB QD1"
    fio_job "$p-seqread" "$f" read 1M 1
    printf -v "${p}_r1m_bw" %s "$BW"
    say "$p: fio seq write 1 MiB QD1"
    fio_job "$p-seqwrite" "$f" write 1M 1 --end_fsync=1
    printf -v "${p}_w1m_bw" %s "$BW"
    say "$p: fio rand read 4 KiB QD16"
    fio_job "$p-randread" "$f" randread 4k 16 --time_based
    printf -v "${p}_r4k_iops" %s "$IOPS"
    say "$p: fio rand write 4 KiB QD16"
    fio_job "$p-randwrite" "$f" randwrite 4k 16 --time_based --end_fsync=1
    printf -v "${p}_w4k_iops" %s "$IOPS"
}

wait_mount() {  # MNT PID NAME
    local i
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$1" && return 0
        kill -0 "$2" 2>/dev/null || { tail -n 30 "$work/$3.log" >&2; die "$3 exited before mounting"; }
        sleep 0.1
    done
    tail -n 30 "$work/$3.log" >&2
    die "$3 did not mount $1 within 30s"
}

peak_rss_mib() {  # PID -> VmHWM (peak resident set) in MiB
    awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$1/status"
}

timed_copy() {  # STEP COMMAND... -> BW: MiB/s of the copy (its output is synced afterwards, untimed)
    local name=$1 t0 t1
    shift
    t0=$(now)
    step "$name" $((runtime * 10 + 600)) "$@"
    t1=$(now)
    sync
    BW=$(python3 -c 'import sys; print(int(sys.argv[1]) / 2**20 / (float(sys.argv[3]) - float(sys.argv[2])))' "$size" "$t0" "$t1")
}

# --- rbd-fuse
mnt_rbdfuse=$work/mnt-rbd-fuse
mkdir -p "$mnt_rbdfuse"
say "mounting rbd-fuse on $mnt_rbdfuse"
rbd-fuse -f -c "$conf" -p "$pool" "$mnt_rbdfuse" >"$work/rbd-fuse.log" 2>&1 &
rbdfuse_pid=$!
wait_mount "$mnt_rbdfuse" "$rbdfuse_pid" rbd-fuse
fio_set rbdfuse "$mnt_rbdfuse/$img_fuse"
unmount "$mnt_rbdfuse" "$rbdfuse_pid"
rbdfuse_pid=

# --- rbdfs
mnt_rbdfs=$work/mnt-rbdfs
mkdir -p "$mnt_rbdfs"
say "mounting rbdfs on $mnt_rbdfs (cache_size=$cache_mib)"
"$rbdfs_bin" mount -f -c "$conf" -o "cache_size=$cache_mib" "$pool" "$mnt_rbdfs" >"$work/rbdfs.log" 2>&1 &
rbdfs_pid=$!
wait_mount "$mnt_rbdfs" "$rbdfs_pid" rbdfs
fio_set rbdfs "$mnt_rbdfs/$img_fuse"

# --- full copy of a snapshot: one untimed read of it first (rbd export to
# /dev/null), so the OSD's cache is as warm for both timed copies: the
# first reader of data just written pays for cold BlueStore reads (a
# measured 6.8 s cold against 2.9 s warm for `rbd export` of 2 GiB), and
# whichever copy went first would carry that alone. Then rbdfs, then rbd
# export.
say "snapshot $img_fuse@$snap; warm-up read, full copy through rbdfs, then rbd export"
step snap-create 120 rbd -c "$conf" snap create --no-progress "$pool/$img_fuse@$snap"
step snap-warm-up $((runtime * 10 + 600)) sh -c "rbd -c '$conf' export --no-progress '$pool/$img_fuse@$snap' - >/dev/null"
snapfile=$mnt_rbdfs/.snap/$img_fuse/$snap
for ((i = 0; i < 100; i++)); do [[ -e $snapfile ]] && break; sleep 0.1; done
[[ -e $snapfile ]] || die "$snapfile did not appear"
timed_copy copy-rbdfs cp --sparse=always "$snapfile" "$work/copy-rbdfs"
copy_rbdfs=$BW
rbdfs_rss=$(peak_rss_mib "$rbdfs_pid")
timed_copy copy-export rbd -c "$conf" export --no-progress "$pool/$img_fuse@$snap" "$work/copy-export"
copy_export=$BW

unmount "$mnt_rbdfs" "$rbdfs_pid"
rbdfs_pid=
copy_ok=yes
if ! cmp "$work/copy-export" "$work/copy-rbdfs" >"$work/cmp-rbdfs.log" 2>&1; then
    copy_ok=no
    echo "$prog: FAIL: rbdfs's copy of $img_fuse@$snap differs from rbd export's: $(cat "$work/cmp-rbdfs.log")" >&2
fi
rm -f "$work/copy-rbdfs"

# rbd-fuse shows no snapshots: copy its head, unchanged since the snapshot.
say "rbd-fuse: full copy of the head"
rbd-fuse -f -c "$conf" -p "$pool" "$mnt_rbdfuse" >>"$work/rbd-fuse.log" 2>&1 &
rbdfuse_pid=$!
wait_mount "$mnt_rbdfuse" "$rbdfuse_pid" rbd-fuse
timed_copy copy-rbd-fuse cp --sparse=always "$mnt_rbdfuse/$img_fuse" "$work/copy-rbd-fuse"
copy_rbdfuse=$BW
rbdfuse_rss=$(peak_rss_mib "$rbdfuse_pid")
unmount "$mnt_rbdfuse" "$rbdfuse_pid"
rbdfuse_pid=
cmp -s "$work/copy-export" "$work/copy-rbd-fuse" ||
    echo "$prog: warning: rbd-fuse's copy of the head differs from rbd export of $img_fuse@$snap" >&2
rm -f "$work"/copy-*

# --- incremental backup: the since- stream of a second snapshot (after
# the copies above, which need the head unchanged since the first).
"$rbdfs_bin" mount -f -c "$conf" -o "cache_size=$cache_mib" "$pool" "$mnt_rbdfs" >>"$work/rbdfs.log" 2>&1 &
rbdfs_pid=$!
wait_mount "$mnt_rbdfs" "$rbdfs_pid" rbdfs
say "incremental: writes over 1/8 of $img_fuse, snapshot bench2, cp of .diff/$img_fuse/bench2/since-$snap, then rbd export-diff"
step diff-writes $((runtime * 10 + 600)) rbd -c "$conf" bench --io-type write --io-pattern rand \
    --io-size 4M --io-threads 16 --io-total "$((size / 8))" "$pool/$img_fuse"
step snap-create-2 120 rbd -c "$conf" snap create --no-progress "$pool/$img_fuse@bench2"
step diff-warm-up $((runtime * 10 + 600)) sh -c "rbd -c '$conf' export-diff --no-progress --from-snap '$snap' '$pool/$img_fuse@bench2' - >/dev/null"
difffile=$mnt_rbdfs/.diff/$img_fuse/bench2/since-$snap
for ((i = 0; i < 100; i++)); do [[ -e $difffile ]] && break; sleep 0.1; done
[[ -e $difffile ]] || die "$difffile did not appear"
diff_bytes=$(stat -c %s "$difffile")
timed_copy_bytes() {  # STEP BYTES COMMAND... -> BW: MiB/s of BYTES
    local name=$1 bytes=$2 t0 t1
    shift 2
    t0=$(now)
    step "$name" $((runtime * 10 + 600)) "$@"
    t1=$(now)
    sync
    BW=$(python3 -c 'import sys; print(int(sys.argv[1]) / 2**20 / (float(sys.argv[3]) - float(sys.argv[2])))' "$bytes" "$t0" "$t1")
}
timed_copy_bytes diff-rbdfs "$diff_bytes" cp "$difffile" "$work/diff-rbdfs"
diff_rbdfs=$BW
[[ $(stat -c %s "$work/diff-rbdfs") = "$diff_bytes" ]] || die "cp of $difffile: not $diff_bytes bytes"
timed_copy_bytes diff-export "$diff_bytes" rbd -c "$conf" export-diff --no-progress --from-snap "$snap" \
    "$pool/$img_fuse@bench2" "$work/diff-export"
diff_export=$BW
say "since-$snap: $diff_bytes bytes (rbd export-diff: $(stat -c %s "$work/diff-export") bytes)"
rm -f "$work/diff-rbdfs" "$work/diff-export"
unmount "$mnt_rbdfs" "$rbdfs_pid"
rbdfs_pid=
load_end=$(load)

# ------------------------------------------------------------------ table
table=$(python3 - "$cache_mib" "$rbdfs_rss" "$rbdfuse_rss" "$copy_ok" \
    "$rados_r4m_bw" "$librbd_r4m_bw" "$rbdfuse_r1m_bw" "$rbdfs_r1m_bw" \
    "$rados_w4m_bw" "$librbd_w4m_bw" "$rbdfuse_w1m_bw" "$rbdfs_w1m_bw" \
    "$rados_r4k_iops" "$librbd_r4k_iops" "$rbdfuse_r4k_iops" "$rbdfs_r4k_iops" \
    "$rados_w4k_iops" "$librbd_w4k_iops" "$rbdfuse_w4k_iops" "$rbdfs_w4k_iops" \
    "$rados_r4m_bw" "$copy_export" "$copy_rbdfuse" "$copy_rbdfs" \
    nan "$diff_export" nan "$diff_rbdfs" <<'PY'
import math, sys
a = sys.argv[1:]
cache, rss, rss_peer, copy_ok = int(a[0]), float(a[1]), float(a[2]), a[3]
v = [float(x) for x in a[4:]]
jobs = [
    # job, unit, target: minimum ratio of rbdfs to (rados, librbd, rbd-fuse)
    ("seq read 1 MiB QD1", "MiB/s", (0.9, None, 3)),
    ("seq write 1 MiB QD1", "MiB/s", (0.9, None, 3)),
    ("rand read 4 KiB QD16", "IOPS", (None, None, 2)),
    ("rand write 4 KiB QD16", "IOPS", (None, None, 2)),
    ("snapshot copy (cp, rbd export)", "MiB/s", (None, 1, None)),
    ("incremental copy (cp since-, rbd export-diff)", "MiB/s", (None, 1, None)),
]
def f(x):
    return "-" if x is None or math.isnan(x) else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")
print("| job | unit | rados bench | librbd | rbd-fuse | rbdfs | rbdfs/rados | rbdfs/librbd | rbdfs/rbd-fuse | target |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for n, (job, unit, tgt) in enumerate(jobs):
    ra, lb, rf, me = v[4 * n:4 * n + 4]
    # Judged on the ratios as shown (2 decimals).
    ratios = [round(me / x, 2) if x and not math.isnan(x) else None for x in (ra, lb, rf)]
    want, met = [], True
    for name, t, x in zip(("rados", "librbd", "rbd-fuse"), tgt, ratios):
        if t is not None:
            want.append(f"≥ {t:g}× {name}")
            met = met and x is not None and x >= t
    print(f"| {job} | {unit} | {f(ra)} | {f(lb)} | {f(rf)} | {f(me)} | "
          + " | ".join("-" if x is None else f"{x:.2f}" for x in ratios)
          + f" | {', '.join(want)}: {'met' if met else '**missed**'} |")
limit = cache + 64
print()
print(f"rbdfs peak RSS (VmHWM): {rss:.0f} MiB with cache_size={cache} MiB; target ≤ {limit} MiB: "
      + ("met" if rss <= limit else "**missed**") + f". (rbd-fuse: {rss_peer:.0f} MiB.)")
print()
print("rbdfs's copy of the snapshot " + ("is identical to rbd export's." if copy_ok == "yes" else "**DIFFERS from rbd export's**."))
PY
)

report=$(
    echo "$machine"
    echo "- load average (1/5/15 min): $load_start at the start, $load_end at the end; the run took $(((SECONDS + 30) / 60)) min"
    echo
    echo "$table"
    echo
    echo "rados bench: 16 ops in flight, 4 MiB objects (sequential and copy rows) or 4 KiB objects"
    echo "(random rows; its read side is \`seq\`). librbd: \`rbd bench\`, 16 threads, 4 MiB sequential"
    echo "or 4 KiB random, on a format-2 image; for the copy row, \`rbd export\` of the snapshot."
    echo "rbd-fuse and rbdfs: the same fio jobs (--direct=1 --ioengine=libaio, writes end with an"
    echo "fsync); their copy row is \`cp --sparse=always\` of the snapshot (rbdfs) or of the unchanged"
    echo "head (rbd-fuse shows no snapshots). Incremental row: \`cp\` of \`.diff/IMG/bench2/since-bench\`"
    echo "(rbdfs) against \`rbd export-diff --from-snap bench IMG@bench2\` (librbd) after random 4 MiB"
    echo "writes over 1/8 of the image; both rates are of rbdfs's stream size."
)
echo "$report"
[[ -z $out_file ]] || echo "$report" >"$out_file"

[[ $copy_ok = yes ]] || exit 1
ok=1
