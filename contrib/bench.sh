#!/usr/bin/env bash
# Benchmark rbdfs against its references on one local cluster, in one run.
# Every figure is paired with a reference measured in the same run, and
# the table reports the ratio rbdfs/reference. Row groups (--only):
#
#   fio      fio jobs on the image file of rbdfs and of rbd-fuse (Ceph's FUSE
#            client): seq read/write 1 MiB QD1, rand read/write 4 KiB QD16
#            (--direct=1 --ioengine=libaio, writes end with an fsync counted
#            in the time), against rados bench (16 in flight, 4 MiB and 4 KiB
#            objects), rbd bench (16 threads, format-2 image) and rbd-fuse.
#   copy     full copy of a snapshot MNT/.snap/IMG/SNAP to local disk with
#            cp --sparse=always, dd bs=4M, qemu-img convert -O raw, tar and
#            rsync, each against `rbd export IMG@SNAP` to the same disk, page
#            cache dropped before each; every copy is byte-compared with the
#            export (a difference fails the run).
#   diff     `cp MNT/.diff/IMG/SNAP2/since-SNAP` against
#            `rbd export-diff --from-snap SNAP IMG@SNAP2` after random 4 MiB
#            writes over 1/8 of the image.
#   streams  four fio streams (1 MiB, QD4 each) on four images of one mount,
#            and on four quarters of one image, read and write, against
#            rados bench -t 16; also each stream's share (starvation check:
#            every stream within 30 % of the streams' mean).
#   loop     losetup --direct-io=on over the rbdfs image file and over
#            rbd-fuse's file of a size-equal image: fio 4 KiB random QD16 and
#            1 MiB sequential on /dev/loopN, and an ext4 on the loop device
#            into which a tree of small files is copied (then synced).
#
# For every rbdfs job the table also gives rbdfs's CPU (user+system, from
# /proc/PID/stat) per GiB moved and its peak RSS (VmRSS sampled every 0.2 s
# during the job), and the reference's CPU per GiB (its process's own, by
# /usr/bin/time, or /proc/PID/stat for rbd-fuse). Two more tables follow:
# for each measured step, how busy the whole machine was and how much CPU
# the hypervisor stole (from /proc/stat); and for each ratio with a
# target, each side's machine CPU per GiB and the ratio rbdfs would reach
# at its CPU cost with every CPU busy that the hypervisor did not steal
# (below the target: CPU-bound here).
#
#   contrib/bench.sh [--size 2G] [--runtime 30] [--cache-mib 64] [--format 1|2]
#                    [--repeat N] [--only fio,copy,diff,streams,loop]
#                    [--cluster-dir DIR] [--keep-cluster] [--keep-logs] [--rbdfs PATH] [--out FILE]
#
# --repeat N makes N fresh runs (new images, new mounts, same cluster): the
# table gives each ratio's minimum and median and every run's value.
#
# Without --rbdfs, builds `cargo build --release` first. The cluster lives
# in --cluster-dir (default /var/tmp/rbdfs-bench, mon port
# ${RBDFS_CLUSTER_PORT:-43789}, so it does not disturb the test cluster in
# /var/tmp/rbdfs-cluster). A cluster already running there is reused (and
# left running; only what this run created in it is removed); otherwise it
# is started fresh (a directory an earlier bench.sh made is destroyed
# first) and stopped and destroyed at the end, unless --keep-cluster. The
# table goes to stdout (markdown); --out FILE also writes it, with the
# machine description, to FILE. Logs and fio's JSON go to a
# /var/tmp/rbdfs-bench-work.* directory, removed after a successful run
# unless --keep-logs.
# Needs: fio, rbd-fuse, fusermount3, python3, the Ceph CLI tools,
# /usr/bin/time; for the copy rows qemu-img (tar and rsync rows are skipped
# if missing); for the loop rows losetup and mkfs.ext4. Run as root.
set -euo pipefail

prog=$(basename "$0")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
all_groups=fio,copy,diff,streams,loop

usage() {
    cat >&2 <<EOF
usage: $prog [--size 2G] [--runtime 30] [--cache-mib 64] [--format 1|2]
             [--repeat N] [--only $all_groups]
             [--cluster-dir DIR] [--keep-cluster] [--keep-logs] [--rbdfs PATH] [--out FILE]
EOF
    exit 2
}

size_arg=2G
runtime=30
cache_mib=64
format=2
repeat=1
only=$all_groups
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
        --repeat) repeat=${2:?}; shift 2 ;;
        --only) only=${2:?}; shift 2 ;;
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
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive number"
IFS=, read -r -a groups <<<"$only"
((${#groups[@]})) || die "--only needs one or more of $all_groups"
for g in "${groups[@]}"; do
    [[ ,$all_groups, = *",$g,"* ]] || die "unknown row group '$g' in --only (groups: $all_groups)"
done
want() { [[ ,$only, = *",$1,"* ]]; }   # is row group $1 selected?
((EUID == 0)) || die "run as root (FUSE mounts, loop devices, drop_caches, cluster daemons)"
need=(fio rbd rados fusermount3 mountpoint python3 timeout)
if want fio || want loop; then need+=(rbd-fuse); fi
if want copy; then need+=(qemu-img); fi
if want loop; then need+=(losetup mkfs.ext4); fi
for c in "${need[@]}"; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install fio rbd-fuse fuse3 ceph-common python3 qemu-utils)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"

export RBDFS_CLUSTER_PORT=${RBDFS_CLUSTER_PORT:-43789}
cluster_dir=$(realpath -m -- "$cluster_dir")
conf=$cluster_dir/ceph.conf
pool=rbd
snap=bench
obj=$((4 << 20))
# Names carry the script's PID so that a reused (shared) cluster never
# sees two runs' images or rados bench objects collide.
tag=bench-$$
run_name=rbdfs-$tag          # rados bench object prefix
clk_tck=$(getconf CLK_TCK)

# ------------------------------------------------------------------ state
# Everything the cleanup must undo, innermost first: ext4 mount, loop
# devices, FUSE mounts, RSS sampler, images.
work=
rbdfs_pid=
rbdfuse_pid=
mnt_rbdfs=
mnt_rbdfuse=
mnt_ext4=
loop_dev=
sampler_pid=
images=()                    # images of the current run, removed after it
started_cluster=0
destroy_cluster=0
failed=0                     # a copy differed from rbd export's
ok=0

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

loop_teardown() {   # the ext4 on the loop device, then the loop device
    if [[ -n $mnt_ext4 ]] && mountpoint -q "$mnt_ext4" 2>/dev/null; then
        timeout 120 umount "$mnt_ext4" 2>/dev/null || timeout 30 umount -l "$mnt_ext4" 2>/dev/null || true
    fi
    mnt_ext4=
    if [[ -n $loop_dev ]]; then
        timeout 60 losetup -d "$loop_dev" 2>/dev/null || true
    fi
    loop_dev=
    # Also any loop device over one of our mounts that an interrupted
    # losetup attached before its name could be recorded.
    local d
    [[ -n $work ]] || return 0
    for d in $(losetup -n -l -O NAME,BACK-FILE 2>/dev/null | awk -v w="$work/" 'index($2, w) == 1 {print $1}'); do
        timeout 60 losetup -d "$d" 2>/dev/null || true
    done
}

remove_images() {   # the current run's images (after the mounts are gone)
    local i
    for i in "${images[@]}"; do
        timeout 60 rbd -c "$conf" snap purge --no-progress "$pool/$i" >/dev/null 2>&1 || true
        timeout 120 rbd -c "$conf" rm --no-progress "$pool/$i" >/dev/null 2>&1 || true
    done
    images=()
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $step_pid ]]; then   # timeout passes the signal on to the step's command
        kill -TERM "$step_pid" 2>/dev/null
        wait "$step_pid" 2>/dev/null
    fi
    [[ -z $sampler_pid ]] || { kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; }
    loop_teardown
    unmount "$mnt_rbdfs" "$rbdfs_pid"
    unmount "$mnt_rbdfuse" "$rbdfuse_pid"
    if [[ -n $work && -d $work ]]; then
        rm -rf "$work"/copy-* "$work"/diff-* "$work/tree" 2>/dev/null
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
    elif ((!keep_cluster)); then
        # A reused cluster: remove what we created in it.
        remove_images
        timeout 120 rados -c "$conf" -p "$pool" cleanup --run-name "$run_name" >/dev/null 2>&1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d /var/tmp/rbdfs-bench-work.XXXXXX)
results=$work/results.tsv    # one line per (run, job, reference), read by the table
notes=$work/notes.txt        # per-run remarks printed under the table
machine_log=$work/machine.tsv   # one line per step: run, name, times, machine and OSD CPU jiffies
: >"$results"
: >"$notes"
: >"$machine_log"
cpu_split_log=$work/cpu-split.tsv   # one line per rbdfs measurement: run, step, user and system s/GiB
: >"$cpu_split_log"

# Runs a step with a timeout; its output goes to $work/NAME.log, shown on failure.
# In the background and waited for: bash runs a trap only once the
# foreground command has ended, while `wait` returns at once on a signal,
# so SIGTERM/SIGINT reach the cleanup at once, which stops the step.
# Each step also appends to $machine_log how busy the whole machine was
# meanwhile (all processes: the OSD, the client, the tool), for the
# report's machine CPU table.
step_pid='' last_step=''
step() {
    local name=$1 t=$2 t0 c0 o0
    shift 2
    t0=$(now) c0=$(cpu_jiffies) o0=$(osd_jiffies)
    timeout "$t" "$@" >"$work/$name.log" 2>&1 </dev/null &
    step_pid=$!
    if ! wait "$step_pid"; then
        step_pid=
        echo "$prog: step '$name' failed or timed out after ${t}s: $*" >&2
        tail -n 30 "$work/$name.log" >&2
        exit 1
    fi
    step_pid=
    last_step=$name
    echo "$run	$name	$t0	$(now)	$c0	$(cpu_jiffies)	$o0	$(osd_jiffies)" >>"$machine_log"
}

# The machine's CPU time so far, in jiffies summed over all CPUs: busy
# (user, nice, system, irq, softirq), idle (idle, iowait), and stolen by
# the hypervisor for other guests.
cpu_jiffies() {
    awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 "," $5 + $6 "," $9; exit}' /proc/stat
}

# step, and the user+system CPU seconds of the command (and its children)
# in REF_CPU: how much CPU a reference tool (rbd, rados) spends.
REF_CPU=''
cpu_step() {  # NAME SECONDS COMMAND...
    local name=$1 t=$2
    shift 2
    step "$name" "$t" /usr/bin/time -f '%U %S' -o "$work/$name.cpu" "$@"
    REF_CPU=$(awk '{print $1 + $2}' "$work/$name.cpu")
}

# The CPU time (user+system jiffies, all threads) the bench cluster's OSD
# processes have used so far: the server's share of a step's machine CPU.
# An OSD that ends within a step takes its jiffies with it; the benchmark's
# OSDs run throughout.
osd_jiffies() {
    local pid s total=0
    for pid in $(pgrep -f -- "^ceph-osd -c $conf "); do
        s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        s=${s##*) }
        total=$((total + $(awk '{print $12 + $13}' <<<"$s")))
    done
    echo "$total"
}

now() { date +%s.%N; }
calc() { python3 -c "import sys; print($1)" "${@:2}"; }   # calc EXPR ARGS: EXPR over sys.argv

# Drops the page cache, so no copy reads (or writes) through pages an
# earlier one left; then waits for the machine to settle (below).
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; settle; }

# Waits (at most 10 s) until the machine is nearly idle for half a second,
# so a timed copy does not share the CPUs with what the step before left
# running (the file system freeing a deleted copy, a daemon exiting).
settle() {
    local i a b
    for ((i = 0; i < 20; i++)); do
        a=$(cpu_jiffies)
        sleep 0.5
        b=$(cpu_jiffies)
        python3 -c 'import sys
a, b = ([int(x) for x in v.split(",")] for v in sys.argv[1:])
d = [y - x for x, y in zip(a, b)]
sys.exit(0 if sum(d) and d[0] < 0.1 * sum(d) else 1)' "$a" "$b" && return 0
    done
    # Still busy (something else runs on the machine): measure anyway; the
    # machine table shows how busy each step was. Returning the last
    # check's failure would end the script under `set -e`.
    return 0
}

# The measuring functions below run in this shell (a failed step exits the
# script) and leave their result in BW (MiB/s), IOPS and BYTES (moved).
BW='' IOPS='' BYTES=''
parse() {  # STEP PYTHON [ARGS]: PYTHON gets $work/STEP as argv[1], prints "MiB/s IOPS BYTES"
    local out
    out=$(python3 -c "$2" "$work/$1" "${@:3}") || die "cannot parse the output of step '$1' (see $work/$1.*)"
    read -r BW IOPS BYTES <<<"$out"
    [[ -n $BW && -n $IOPS && -n $BYTES ]] || die "cannot parse the output of step '$1'"
}

# ------------------------------------------------- per-job CPU and memory
# CPU seconds (all threads) a process has used so far: "user system".
proc_cpu() {
    # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    local s
    s=$(cat "/proc/$1/stat") || die "process $1 is gone"
    s=${s##*) }
    awk -v t="$clk_tck" '{print $12 / t, $13 / t}' <<<"$s"
}

# meas_begin PID ... meas_end BYTES: the process's CPU seconds per GiB
# moved in between (CPU_GIB) and, sampled every 0.2 s, its peak RSS in MiB
# (RSS_MIB). VmHWM cannot be reset between jobs, so it would only give the
# peak of the whole mount.
meas_pid='' meas_cpu0='' CPU_GIB='' CPU_USER_GIB='' CPU_SYS_GIB='' RSS_MIB=''
meas_begin() {
    meas_pid=$1
    meas_cpu0=$(proc_cpu "$meas_pid")
    echo 0 >"$work/rss.max"
    (
        max=0
        while kill -0 "$meas_pid" 2>/dev/null; do
            v=$(awk '/^VmRSS:/ {print $2}' "/proc/$meas_pid/status" 2>/dev/null) || v=0
            # Renamed into place, so meas_end never reads a half-written file.
            if ((${v:-0} > max)); then max=$v; echo "$max" >"$work/rss.tmp" && mv -f "$work/rss.tmp" "$work/rss.max"; fi
            sleep 0.2
        done
    ) &
    sampler_pid=$!
}
meas_end() {
    local cpu1
    cpu1=$(proc_cpu "$meas_pid")
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
    # User and system CPU apart too: the system part is the kernel's work
    # in the daemon's threads: FUSE (copying request and reply pages), the
    # sockets to the OSDs, page faults.
    read -r CPU_GIB CPU_USER_GIB CPU_SYS_GIB < <(python3 -c 'import sys
u0, s0 = map(float, sys.argv[1].split())
u1, s1 = map(float, sys.argv[2].split())
gib = int(sys.argv[3]) / 2**30
print((u1 - u0 + s1 - s0) / gib, (u1 - u0) / gib, (s1 - s0) / gib)' "$meas_cpu0" "$cpu1" "$1")
    echo "$run	$last_step	$CPU_USER_GIB	$CPU_SYS_GIB" >>"$cpu_split_log"
    RSS_MIB=$(calc 'int(sys.argv[1]) / 1024' "$(cat "$work/rss.max")")
}

# ------------------------------------------------------------------ results
# record GROUP JOB UNIT RBDFS REFNAME REF RBDFS_CPU_GIB REF_CPU_GIB RBDFS_RSS TARGET RBDFS_STEP REF_STEP
# One ratio: rbdfs's figure against one reference, in run $run. "-" for
# anything not measured; TARGET is the minimum wanted ratio or "-". The
# steps (names without the run number) are the measured steps of each
# side, for the machine CPU of each (see $machine_log).
run=0
record() {
    local IFS=$'\t'
    echo "$run	$*" >>"$results"
}
note() { echo "- run $run: $*" >>"$notes"; }
# CPU seconds per GiB of a reference from its CPU seconds and bytes.
per_gib() { calc 'float(sys.argv[1]) / (int(sys.argv[2]) / 2**30)' "$1" "$2"; }

# ------------------------------------------------------------------ build
if [[ -z $rbdfs_bin ]]; then
    say "building rbdfs (cargo build --release)"
    (cd "$root" && timeout 1200 cargo build --release --quiet) || die "cargo build failed"
    rbdfs_bin=${CARGO_TARGET_DIR:-$root/target}/release/rbdfs
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
# shellcheck disable=SC1091 # os-release is the machine's
machine=$(
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- rbdfs: $rbdfs_desc"
    echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- software: Ceph $ceph_version, $(fio --version), $(fusermount3 --version 2>&1 | head -n1)$(command -v rbd-fuse >/dev/null && echo ", rbd-fuse on $(ldd "$(command -v rbd-fuse)" | grep -o 'libfuse[^ ]*' | head -n1)")"
    echo "- cluster: $cluster_desc"
    echo "- run: row groups $only, $repeat run(s), image $((size >> 20)) MiB (format $format for the FUSE jobs, format 2 for rbd bench), runtime ${runtime}s, rbdfs cache_size=${cache_mib} MiB"
)
say "machine:"
echo "$machine" >&2

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)

# ------------------------------------------------------- mounts and images
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

mount_rbdfs() {
    [[ -z $rbdfs_pid ]] || return 0
    mnt_rbdfs=$work/mnt-rbdfs
    mkdir -p "$mnt_rbdfs"
    "$rbdfs_bin" mount -f -c "$conf" -o "cache_size=$cache_mib" "$pool" "$mnt_rbdfs" >>"$work/rbdfs.log" 2>&1 &
    rbdfs_pid=$!
    wait_mount "$mnt_rbdfs" "$rbdfs_pid" rbdfs
}
umount_rbdfs() { unmount "$mnt_rbdfs" "$rbdfs_pid"; rbdfs_pid=; }

mount_rbdfuse() {
    [[ -z $rbdfuse_pid ]] || return 0
    mnt_rbdfuse=$work/mnt-rbd-fuse
    mkdir -p "$mnt_rbdfuse"
    rbd-fuse -f -c "$conf" -p "$pool" "$mnt_rbdfuse" >>"$work/rbd-fuse.log" 2>&1 &
    rbdfuse_pid=$!
    wait_mount "$mnt_rbdfuse" "$rbdfuse_pid" rbd-fuse
}
umount_rbdfuse() { unmount "$mnt_rbdfuse" "$rbdfuse_pid"; rbdfuse_pid=; }

wait_file() {  # PATH: a file a mount shows once it has listed a new image or snapshot
    local i
    for ((i = 0; i < 100; i++)); do [[ -e $1 ]] && return 0; sleep 0.1; done
    die "$1 did not appear"
}

# From rbd bench's final "elapsed: S ops: N ops/sec: X bytes/sec: ..." line.
rbd_bench() {  # STEP TYPE PATTERN IOSIZE_BYTES TOTAL_BYTES IMAGE
    local name=$1 type=$2 pattern=$3 ios=$4 total=$5 image=$6
    cpu_step "$name" $((runtime * 4 + 300)) rbd -c "$conf" bench --io-type "$type" --io-pattern "$pattern" \
        --io-size "$ios" --io-threads 16 --io-total "$total" "$pool/$image"
    parse "$name" '
import re, sys
m = [re.search(r"ops/sec: *([0-9.]+)", l) for l in open(sys.argv[1] + ".log")]
ops = [float(x.group(1)) for x in m if x][-1]
print(ops * int(sys.argv[2]) / 2**20, ops, sys.argv[3])' "$ios" "$total"
}

# A fresh image of the run, written in full (rbd bench seq write, 4 MiB)
# so no job reads a hole: reads of holes cost much less and would flatter.
new_image() {  # NAME [FORMAT]
    local name=$1 fmt=${2:-$format}
    images+=("$name")
    if ((fmt == 1)); then
        step "create-$name" 60 env RBD_FORCE_ALLOW_V1=1 rbd -c "$conf" create --image-format 1 --size "$((size >> 20))M" "$pool/$name"
    else
        step "create-$name" 60 rbd -c "$conf" create --image-format 2 --size "$((size >> 20))M" "$pool/$name"
    fi
    say "prefilling $name"
    rbd_bench "prefill-$name" write seq "$obj" "$size" "$name"
}

# ------------------------------------------------------------ rados bench
# rados bench's summary (its "MB" are MiB), and its CPU per GiB in REF_CPU.
rados_bench() {  # STEP SECONDS MODE BS [extra args]
    local name=$1 secs=$2 mode=$3 bs=$4
    shift 4
    cpu_step "$name" $((secs + 120)) rados -c "$conf" -p "$pool" bench "$secs" "$mode" \
        -t 16 --run-name "$run_name" --format json "$@" ${bs:+-b "$bs"}
    # Not json.loads: rados prints its cleanup messages into the middle of the JSON.
    parse "$name" '
import re, sys
t = open(sys.argv[1] + ".log").read()
last = lambda k: float(re.findall(r"\"%s\":\"([0-9.]+)\"" % k, t)[-1])
bw = last("bandwidth")
print(bw, last("average_iops"), int(bw * 2**20 * last("total_time_run")))'
    REF_CPU=$(per_gib "$REF_CPU" "$BYTES")
}

# The ceilings, measured once per run for whichever groups need them:
# rados_{w,r}{4m,4k}_{bw,iops,cpu}.
ceiling_4m() {
    [[ -z ${rados_r4m_bw:-} ]] || return 0
    say "rados bench: 4 MiB objects, write (${runtime}s or $((size >> 20)) MiB) then seq, 16 in flight"
    rados_bench rados-write-4m-$run "$runtime" write 4M --no-cleanup --max-objects $((size / obj))
    rados_w4m_bw=$BW rados_w4m_cpu=$REF_CPU
    rados_bench rados-seq-4m-$run "$runtime" seq ""
    rados_r4m_bw=$BW rados_r4m_cpu=$REF_CPU
    step rados-cleanup-4m-$run 300 rados -c "$conf" -p "$pool" cleanup --run-name "$run_name"
}
ceiling_4k() {
    [[ -z ${rados_r4k_iops:-} ]] || return 0
    say "rados bench: 4 KiB objects, write (${runtime}s) then seq, 16 in flight"
    rados_bench rados-write-4k-$run "$runtime" write 4K --no-cleanup
    rados_w4k_iops=$IOPS rados_w4k_cpu=$REF_CPU
    rados_bench rados-seq-4k-$run "$runtime" seq ""
    rados_r4k_iops=$IOPS rados_r4k_cpu=$REF_CPU
    step rados-cleanup-4k-$run 600 rados -c "$conf" -p "$pool" cleanup --run-name "$run_name"
}

# ------------------------------------------------------------------ fio
# One fio job on FILE; BW/IOPS of its read or write side, BYTES both sides.
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
print(side["bw_bytes"] / 2**20, side["iops"], j["read"]["io_bytes"] + j["write"]["io_bytes"])' "$rw"
}

# The four fio jobs of the fio and loop groups on FILE, measuring process
# PID: sets PREFIX_{seqread,seqwrite,randread,randwrite}_{v,cpu,rss}
# (v: MiB/s for sequential, IOPS for random jobs).
fio_set() {  # PREFIX FILE PID SEQ_QD
    local p=$1 f=$2 pid=$3 sqd=$4 job rw bs qd unit extra label
    case $p in
        fs) label=rbdfs ;; fuse) label=rbd-fuse ;;
        lfs) label="rbdfs loop" ;; lfuse) label="rbd-fuse loop" ;; *) label=$p ;;
    esac
    for job in seqread seqwrite randread randwrite; do
        case $job in
            seqread) rw=read bs=1M qd=$sqd unit=bw extra=() ;;
            seqwrite) rw=write bs=1M qd=$sqd unit=bw extra=(--end_fsync=1) ;;
            randread) rw=randread bs=4k qd=16 unit=iops extra=(--time_based) ;;
            randwrite) rw=randwrite bs=4k qd=16 unit=iops extra=(--time_based --end_fsync=1) ;;
        esac
        say "$label: fio $rw $bs QD$qd"
        meas_begin "$pid"
        fio_job "$p-$job-$run" "$f" "$rw" "$bs" "$qd" "${extra[@]}"
        meas_end "$BYTES"
        if [[ $unit = bw ]]; then printf -v "${p}_${job}_v" %s "$BW"; else printf -v "${p}_${job}_v" %s "$IOPS"; fi
        printf -v "${p}_${job}_cpu" %s "$CPU_GIB"
        printf -v "${p}_${job}_rss" %s "$RSS_MIB"
    done
}

# ================================================================ row groups

# fio: the original four jobs against rados bench, rbd bench and rbd-fuse.
# rbd-fuse runs first, alone (rbdfs not mounted), on the same image.
group_fio() {
    local img=$tag-$run-main img_librbd=$tag-$run-librbd
    ceiling_4m
    ceiling_4k
    new_image "$img_librbd" 2
    say "rbd bench on $img_librbd (format 2)"
    rbd_bench "rbd-write-seq-4m-$run" write seq "$obj" "$size" "$img_librbd"
    local lw1m=$BW lw1m_cpu lr1m lr1m_cpu lw4k lw4k_cpu lr4k lr4k_cpu
    lw1m_cpu=$(per_gib "$REF_CPU" "$BYTES")
    rbd_bench "rbd-read-seq-4m-$run" read seq "$obj" "$size" "$img_librbd"
    lr1m=$BW lr1m_cpu=$(per_gib "$REF_CPU" "$BYTES")
    # rbd bench has no time limit: the random jobs do about --runtime worth
    # of I/O at the rate rados bench just measured for 4 KiB objects (at
    # most the image size, at least 1000 ops).
    rbd_bench "rbd-write-rand-4k-$run" write rand 4096 "$(rand_total "$rados_w4k_iops")" "$img_librbd"
    lw4k=$IOPS lw4k_cpu=$(per_gib "$REF_CPU" "$BYTES")
    rbd_bench "rbd-read-rand-4k-$run" read rand 4096 "$(rand_total "$rados_r4k_iops")" "$img_librbd"
    lr4k=$IOPS lr4k_cpu=$(per_gib "$REF_CPU" "$BYTES")

    umount_rbdfs
    mount_rbdfuse
    fio_set fuse "$mnt_rbdfuse/$img" "$rbdfuse_pid" 1
    umount_rbdfuse
    mount_rbdfs
    fio_set fs "$mnt_rbdfs/$img" "$rbdfs_pid" 1

    # shellcheck disable=SC2154 # fuse_* and fs_* are set by fio_set
    {
        local g=fio
        record $g "seq read 1 MiB QD1" MiB/s "$fs_seqread_v" "rados bench" "$rados_r4m_bw" "$fs_seqread_cpu" "$rados_r4m_cpu" "$fs_seqread_rss" 0.95 "fs-seqread" "rados-seq-4m"
        record $g "seq read 1 MiB QD1" MiB/s "$fs_seqread_v" "rbd bench" "$lr1m" "$fs_seqread_cpu" "$lr1m_cpu" "$fs_seqread_rss" 1 "fs-seqread" "rbd-read-seq-4m"
        record $g "seq read 1 MiB QD1" MiB/s "$fs_seqread_v" rbd-fuse "$fuse_seqread_v" "$fs_seqread_cpu" "$fuse_seqread_cpu" "$fs_seqread_rss" 3 "fs-seqread" "fuse-seqread"
        record $g "seq write 1 MiB QD1" MiB/s "$fs_seqwrite_v" "rados bench" "$rados_w4m_bw" "$fs_seqwrite_cpu" "$rados_w4m_cpu" "$fs_seqwrite_rss" 0.95 "fs-seqwrite" "rados-write-4m"
        record $g "seq write 1 MiB QD1" MiB/s "$fs_seqwrite_v" "rbd bench" "$lw1m" "$fs_seqwrite_cpu" "$lw1m_cpu" "$fs_seqwrite_rss" 1 "fs-seqwrite" "rbd-write-seq-4m"
        record $g "seq write 1 MiB QD1" MiB/s "$fs_seqwrite_v" rbd-fuse "$fuse_seqwrite_v" "$fs_seqwrite_cpu" "$fuse_seqwrite_cpu" "$fs_seqwrite_rss" 3 "fs-seqwrite" "fuse-seqwrite"
        record $g "rand read 4 KiB QD16" IOPS "$fs_randread_v" "rados bench" "$rados_r4k_iops" "$fs_randread_cpu" "$rados_r4k_cpu" "$fs_randread_rss" - "fs-randread" "rados-seq-4k"
        record $g "rand read 4 KiB QD16" IOPS "$fs_randread_v" "rbd bench" "$lr4k" "$fs_randread_cpu" "$lr4k_cpu" "$fs_randread_rss" - "fs-randread" "rbd-read-rand-4k"
        record $g "rand read 4 KiB QD16" IOPS "$fs_randread_v" rbd-fuse "$fuse_randread_v" "$fs_randread_cpu" "$fuse_randread_cpu" "$fs_randread_rss" 2 "fs-randread" "fuse-randread"
        record $g "rand write 4 KiB QD16" IOPS "$fs_randwrite_v" "rados bench" "$rados_w4k_iops" "$fs_randwrite_cpu" "$rados_w4k_cpu" "$fs_randwrite_rss" - "fs-randwrite" "rados-write-4k"
        record $g "rand write 4 KiB QD16" IOPS "$fs_randwrite_v" "rbd bench" "$lw4k" "$fs_randwrite_cpu" "$lw4k_cpu" "$fs_randwrite_rss" - "fs-randwrite" "rbd-write-rand-4k"
        record $g "rand write 4 KiB QD16" IOPS "$fs_randwrite_v" rbd-fuse "$fuse_randwrite_v" "$fs_randwrite_cpu" "$fuse_randwrite_cpu" "$fs_randwrite_rss" 2 "fs-randwrite" "fuse-randwrite"
    }
}

rand_total() {
    calc 'max(4096 * 1000, min(int(sys.argv[3]), int(float(sys.argv[1]) * int(sys.argv[2])) * 4096))' "$1" "$runtime" "$size"
}

# Times COMMAND (a step), then syncs its output untimed; BW = BYTES/time.
timed() {  # STEP BYTES COMMAND...
    local name=$1 bytes=$2 t0 t1
    shift 2
    t0=$(now)
    "$@"
    t1=$(now)
    sync
    BW=$(calc 'int(sys.argv[1]) / 2**20 / (float(sys.argv[3]) - float(sys.argv[2]))' "$bytes" "$t0" "$t1")
}

# copy: the snapshot of the (fully written) main image copied to local
# disk by each tool through rbdfs, each paired with an `rbd export` of the
# same snapshot to the same disk. Before each copy: the page cache is
# dropped and rbdfs remounted, so neither the kernel nor rbdfs's own cache
# holds any of the snapshot.
group_copy() {
    local img=$tag-$run-main snapfile tool exp=$work/copy-export out bw_tool cpu_tool rss_tool bw_exp cpu_exp target
    snap_main "$img"
    snapfile=$mnt_rbdfs/.snap/$img/$snap
    # One untimed read of the snapshot first (rbd export to /dev/null), so
    # the OSD's cache is as warm for all timed copies: the first reader of
    # data just written pays for cold BlueStore reads (a measured 6.8 s
    # cold against 2.9 s warm for `rbd export` of 2 GiB).
    step "snap-warm-up-$run" $((runtime * 10 + 600)) sh -c "rbd -c '$conf' export --no-progress '$pool/$img@$snap' - >/dev/null"
    for tool in cp dd qemu-img tar rsync; do
        if ! command -v "$tool" >/dev/null; then
            note "copy with $tool skipped: $tool is not installed"
            continue
        fi
        out=$work/copy-$tool
        umount_rbdfs
        mount_rbdfs
        wait_file "$snapfile"
        drop_caches
        say "copy: $tool of $img@$snap through rbdfs"
        meas_begin "$rbdfs_pid"
        case $tool in
            cp) timed "copy-cp-$run" "$size" step "copy-cp-$run" $((runtime * 10 + 600)) cp --sparse=always "$snapfile" "$out" ;;
            dd) timed "copy-dd-$run" "$size" step "copy-dd-$run" $((runtime * 10 + 600)) dd if="$snapfile" of="$out" bs=4M status=none ;;
            qemu-img) timed "copy-qemu-img-$run" "$size" step "copy-qemu-img-$run" $((runtime * 10 + 600)) qemu-img convert -f raw -O raw "$snapfile" "$out" ;;
            tar) timed "copy-tar-$run" "$size" step "copy-tar-$run" $((runtime * 10 + 600)) tar -cf "$out" -C "$(dirname "$snapfile")" "$snap" ;;
            rsync) timed "copy-rsync-$run" "$size" step "copy-rsync-$run" $((runtime * 10 + 600)) rsync "$snapfile" "$out" ;;
        esac
        bw_tool=$BW
        meas_end "$size"
        cpu_tool=$CPU_GIB rss_tool=$RSS_MIB

        rm -f "$exp"
        drop_caches
        say "copy: rbd export of $img@$snap"
        timed "copy-export-$tool-$run" "$size" cpu_step "copy-export-$tool-$run" $((runtime * 10 + 600)) \
            rbd -c "$conf" export --no-progress "$pool/$img@$snap" "$exp"
        bw_exp=$BW cpu_exp=$(per_gib "$REF_CPU" "$size")

        # Byte-compare (tar's member, extracted to a pipe).
        if [[ $tool = tar ]]; then
            tar -xOf "$out" "$snap" | cmp - "$exp" >"$work/cmp-$tool-$run.log" 2>&1 || copy_differs "$tool"
        else
            cmp "$out" "$exp" >"$work/cmp-$tool-$run.log" 2>&1 || copy_differs "$tool"
        fi
        rm -f "$out"
        # Issue 17: every reader of an immutable snapshot at 1.5x rbd export.
        target=1.5
        record copy "snapshot copy: $tool" MiB/s "$bw_tool" "rbd export" "$bw_exp" "$cpu_tool" "$cpu_exp" "$rss_tool" "$target" "copy-$tool" "copy-export-$tool"
    done
    rm -f "$exp"
}
copy_differs() {
    failed=1
    echo "$prog: FAIL: $1's copy of the snapshot differs from rbd export's: $(cat "$work/cmp-$1-$run.log")" >&2
    note "**$1's copy of the snapshot DIFFERS from rbd export's**"
}
snap_main() {  # IMG: snapshot $snap of IMG, once per run, visible in the mount
    if ! timeout 60 rbd -c "$conf" snap ls "$pool/$1" 2>/dev/null | awk '{print $2}' | grep -qx "$snap"; then
        step "snap-create-$run" 120 rbd -c "$conf" snap create --no-progress "$pool/$1@$snap"
    fi
    mount_rbdfs
    wait_file "$mnt_rbdfs/.snap/$1/$snap"
}

# diff: the since- stream of a second snapshot after random 4 MiB writes
# over 1/8 of the image, against rbd export-diff (both rates of rbdfs's
# stream size; an untimed export-diff warms the OSD). The stream is small
# (1/8 of --size) and each copy short, so the pair is timed three times,
# interleaved, each rbdfs copy on a fresh mount with the page cache
# dropped (as the export's); the row gives each side's median.
diff_pairs=3
group_diff() {
    local img=$tag-$run-main difffile diff_bytes pair fs_bw=() fs_cpu=() ex_bw=() ex_cpu=() rss_fs=0
    snap_main "$img"
    say "diff: writes over 1/8 of $img, snapshot bench2, then $diff_pairs pairs: cp of .diff/$img/bench2/since-$snap, rbd export-diff"
    step "diff-writes-$run" $((runtime * 10 + 600)) rbd -c "$conf" bench --io-type write --io-pattern rand \
        --io-size 4M --io-threads 16 --io-total "$((size / 8))" "$pool/$img"
    step "snap-create-2-$run" 120 rbd -c "$conf" snap create --no-progress "$pool/$img@bench2"
    step "diff-warm-up-$run" $((runtime * 10 + 600)) sh -c "rbd -c '$conf' export-diff --no-progress --from-snap '$snap' '$pool/$img@bench2' - >/dev/null"
    difffile=$mnt_rbdfs/.diff/$img/bench2/since-$snap
    for ((pair = 1; pair <= diff_pairs; pair++)); do
        # Which side goes first alternates, so neither always follows
        # the same step.
        if ((pair % 2 == 0)); then diff_export_once; fi
        umount_rbdfs
        mount_rbdfs
        wait_file "$difffile"
        diff_bytes=$(stat -c %s "$difffile")
        drop_caches
        meas_begin "$rbdfs_pid"
        timed "diff-rbdfs-$run" "$diff_bytes" step "diff-rbdfs-$run" $((runtime * 10 + 600)) cp "$difffile" "$work/diff-rbdfs"
        fs_bw+=("$BW")
        meas_end "$diff_bytes"
        fs_cpu+=("$CPU_GIB")
        rss_fs=$(calc 'max(float(sys.argv[1]), float(sys.argv[2]))' "$rss_fs" "$RSS_MIB")
        [[ $(stat -c %s "$work/diff-rbdfs") = "$diff_bytes" ]] || die "cp of $difffile: not $diff_bytes bytes"
        rm -f "$work/diff-rbdfs"
        if ((pair % 2 == 1)); then diff_export_once; fi
    done
    record diff "incremental copy (cp since-)" MiB/s "$(median "${fs_bw[@]}")" "rbd export-diff" "$(median "${ex_bw[@]}")" \
        "$(median "${fs_cpu[@]}")" "$(median "${ex_cpu[@]}")" "$rss_fs" 1 diff-rbdfs diff-export
    note "since-$snap: $diff_bytes bytes (rbd export-diff: $(stat -c %s "$work/diff-export") bytes); pairs (rbdfs/export-diff MiB/s): $(paste -d/ <(printf '%.0f\n' "${fs_bw[@]}") <(printf '%.0f\n' "${ex_bw[@]}") | paste -sd' ')"
    rm -f "$work/diff-rbdfs" "$work/diff-export"
}
diff_export_once() {   # one timed rbd export-diff of the pair, into ex_bw and ex_cpu
    rm -f "$work/diff-export"
    drop_caches
    timed "diff-export-$run" "$diff_bytes" cpu_step "diff-export-$run" $((runtime * 10 + 600)) \
        rbd -c "$conf" export-diff --no-progress --from-snap "$snap" "$pool/$img@bench2" "$work/diff-export"
    ex_bw+=("$BW")
    ex_cpu+=("$(per_gib "$REF_CPU" "$diff_bytes")")
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# streams: four fio streams at once (one fio process, one job each) on
# four images, or on four quarters of one image; time-based, so all four
# run for the whole --runtime. Aggregate against rados bench -t 16 (16 ops
# in flight, as the four QD4 streams); each stream's share is noted.
group_streams() {
    local i files=() rw kind name agg bytes bws fair fsync
    for i in 1 2 3 4; do
        new_image "$tag-$run-s$i"
    done
    ceiling_4m
    mount_rbdfs
    for i in 1 2 3 4; do
        files+=("$mnt_rbdfs/$tag-$run-s$i")
        wait_file "${files[-1]}"
    done
    for rw in write read; do
        for kind in "4 images" "1 image"; do
            name=streams-$rw-${kind// /-}-$run
            local jobs=()
            if [[ $kind = "4 images" ]]; then
                for i in 1 2 3 4; do jobs+=(--name="s$i" --filename="${files[i - 1]}" --size="$size"); done
            else
                jobs=(--name=s --filename="${files[0]}" --numjobs=4 --size=$((size / 4)) --offset_increment=$((size / 4)))
            fi
            fsync=0
            [[ $rw = read ]] || fsync=1
            say "streams: four $rw streams, 1 MiB QD4 each, on $kind"
            meas_begin "$rbdfs_pid"
            step "$name" $((runtime * 3 + 300)) fio --direct=1 --ioengine=libaio --rw="$rw" --bs=1M \
                --iodepth=4 --time_based --runtime="$runtime" --allow_file_create=0 --fallocate=none \
                --end_fsync=$fsync \
                --output-format=json --output="$work/$name.json" "${jobs[@]}"
            # The aggregate MiB/s, bytes moved, whether every stream got
            # within 30 % of the streams' mean (no stream starved), and each
            # stream's MiB/s with its distance from the mean.
            read -r agg bytes fair bws < <(python3 - "$work/$name.json" "$rw" <<'PY'
import json, sys
jobs = json.load(open(sys.argv[1]))["jobs"]
if any(j["error"] for j in jobs):
    sys.exit("fio job failed")
bw = [j[sys.argv[2]]["bw_bytes"] / 2**20 for j in jobs]
mean = sum(bw) / len(bw)
fair = all(abs(b - mean) <= 0.3 * mean for b in bw)
print(f"{sum(bw):.1f}", sum(j[sys.argv[2]]["io_bytes"] for j in jobs), "yes" if fair else "**NO**",
      ";".join(f"{b:.0f} MiB/s ({round(100 * (b - mean) / mean):+d} %)" for b in bw))
PY
            ) || die "cannot parse $work/$name.json"
            meas_end "$bytes"
            if [[ $rw = write ]]; then
                record streams "4 streams $rw 1 MiB QD4, $kind" MiB/s "$agg" "rados bench" "$rados_w4m_bw" "$CPU_GIB" "$rados_w4m_cpu" "$RSS_MIB" 0.9 "streams-$rw-${kind// /-}" "rados-write-4m"
            else
                record streams "4 streams $rw 1 MiB QD4, $kind" MiB/s "$agg" "rados bench" "$rados_r4m_bw" "$CPU_GIB" "$rados_r4m_cpu" "$RSS_MIB" 0.9 "streams-$rw-${kind// /-}" "rados-seq-4m"
            fi
            note "4 streams $rw on $kind: ${bws//;/, }; every stream within 30 % of the mean: $fair"
        done
    done
}

# A tree of a few thousand small files (512 B - 16 KiB, 3000 files in
# 30 directories, about 25 MiB), made once per invocation, that the loop
# rows copy into an ext4.
tree_bytes=
make_tree() {
    [[ -z $tree_bytes ]] || return 0
    python3 - "$work/tree" <<'PY'
import os, random, sys
r = random.Random(17)
for d in range(30):
    p = os.path.join(sys.argv[1], f"d{d:02}")
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, f"f{f:03}"), "wb") as o:
            o.write(r.randbytes(r.randint(512, 16384)))
PY
    tree_bytes=$(du -sb --apparent-size "$work/tree" | cut -f1)
}

# Loop device over FILE (direct I/O, so the loop device reads and writes
# the FUSE file with O_DIRECT instead of through the page cache), the
# fio jobs on it, then an ext4 on it (mkfs, mount, copy, sync: timed
# together); measures process PID. Sets PREFIX_* as fio_set does, and
# PREFIX_ext4_{v,cpu,rss} (v: seconds) and PREFIX_ext4_mkfs (seconds of
# v spent in mkfs and mount).
loop_side() {  # PREFIX FILE PID LABEL
    local p=$1 f=$2 pid=$3 label=$4 t0 tm t1
    loop_dev=$(losetup --direct-io=on -f --show "$f") || die "losetup over $f failed"
    note "$label: $loop_dev over $f, direct I/O: $(losetup -n -O DIO "$loop_dev" | tr -d ' ')"
    fio_set "$p" "$loop_dev" "$pid" 1
    mnt_ext4=$work/mnt-ext4
    mkdir -p "$mnt_ext4"
    drop_caches
    # The source tree is read into the page cache first: the row times the
    # client under the ext4, not the local disk (reading the cold tree took
    # 0.4-0.6 s of a ~1 s copy, the same on both sides).
    find "$work/tree" -type f -exec cat {} + >/dev/null
    say "$label: mkfs.ext4 on $loop_dev, mount, copy of $tree_bytes bytes of small files into it, then sync"
    meas_begin "$pid"
    t0=$(now)
    # One step, so that the machine's CPU table covers all of it. nodiscard:
    # mkfs would otherwise discard the whole device, which one FUSE client
    # may turn into hole punching and the other not; the lazy inits off: no
    # background zeroing by the kernel after the timed copy.
    # shellcheck disable=SC2016 # $1.. are the inner shell's
    step "ext4-copy-$p-$run" $((runtime * 20 + 900)) sh -c '
        mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$1" &&
            mount -t ext4 "$1" "$2" && date +%s.%N >"$4" &&
            cp -a "$3" "$2/" && sync -f "$2"' sh "$loop_dev" "$mnt_ext4" "$work/tree" "$work/ext4-mounted"
    t1=$(now)
    tm=$(cat "$work/ext4-mounted")
    meas_end "$tree_bytes"
    printf -v "${p}_ext4_mkfs" %s "$(calc 'float(sys.argv[2]) - float(sys.argv[1])' "$t0" "$tm")"
    printf -v "${p}_ext4_v" %s "$(calc 'float(sys.argv[2]) - float(sys.argv[1])' "$t0" "$t1")"
    printf -v "${p}_ext4_cpu" %s "$CPU_GIB"
    printf -v "${p}_ext4_rss" %s "$RSS_MIB"
    loop_teardown
}

# loop: the same jobs over rbdfs's file and over rbd-fuse's file of a
# size-equal image (two images, so neither client sees the other's lock,
# data or file system).
group_loop() {
    local img_fs=$tag-$run-loop-rbdfs img_fuse=$tag-$run-loop-fuse
    make_tree
    new_image "$img_fs"
    new_image "$img_fuse"
    mount_rbdfs
    wait_file "$mnt_rbdfs/$img_fs"
    loop_side lfs "$mnt_rbdfs/$img_fs" "$rbdfs_pid" rbdfs
    mount_rbdfuse
    wait_file "$mnt_rbdfuse/$img_fuse"
    loop_side lfuse "$mnt_rbdfuse/$img_fuse" "$rbdfuse_pid" rbd-fuse
    umount_rbdfuse
    # shellcheck disable=SC2154 # lfs_* and lfuse_* are set by loop_side
    {
        local g=loop
        record $g "loop seq read 1 MiB QD1" MiB/s "$lfs_seqread_v" rbd-fuse "$lfuse_seqread_v" "$lfs_seqread_cpu" "$lfuse_seqread_cpu" "$lfs_seqread_rss" 3 "lfs-seqread" "lfuse-seqread"
        record $g "loop seq write 1 MiB QD1" MiB/s "$lfs_seqwrite_v" rbd-fuse "$lfuse_seqwrite_v" "$lfs_seqwrite_cpu" "$lfuse_seqwrite_cpu" "$lfs_seqwrite_rss" 3 "lfs-seqwrite" "lfuse-seqwrite"
        record $g "loop rand read 4 KiB QD16" IOPS "$lfs_randread_v" rbd-fuse "$lfuse_randread_v" "$lfs_randread_cpu" "$lfuse_randread_cpu" "$lfs_randread_rss" 3 "lfs-randread" "lfuse-randread"
        record $g "loop rand write 4 KiB QD16" IOPS "$lfs_randwrite_v" rbd-fuse "$lfuse_randwrite_v" "$lfs_randwrite_cpu" "$lfuse_randwrite_cpu" "$lfs_randwrite_rss" 3 "lfs-randwrite" "lfuse-randwrite"
        # A time: the ratio is rbd-fuse's time over rbdfs's (> 1: rbdfs faster).
        record $g "loop ext4: mkfs + small files cp -a + sync (1/s)" 1/s "$(calc '1 / float(sys.argv[1])' "$lfs_ext4_v")" rbd-fuse \
            "$(calc '1 / float(sys.argv[1])' "$lfuse_ext4_v")" "$lfs_ext4_cpu" "$lfuse_ext4_cpu" "$lfs_ext4_rss" 2 ext4-copy-lfs ext4-copy-lfuse
    }
    # shellcheck disable=SC2154 # set by loop_side
    note "ext4 mkfs + mount + copy of the small-file tree + sync: rbdfs $(printf %.2f "$lfs_ext4_v") s (mkfs + mount $(printf %.2f "$lfs_ext4_mkfs")), rbd-fuse $(printf %.2f "$lfuse_ext4_v") s (mkfs + mount $(printf %.2f "$lfuse_ext4_mkfs"))"
}

# ================================================================ the runs
# One fresh run: new images, new mounts; the ceilings measured again.
run_once() {
    rados_r4m_bw='' rados_r4k_iops=''
    if want fio; then group_fio; fi
    mount_rbdfs
    if want copy; then group_copy; fi
    if want diff; then group_diff; fi
    if want streams; then group_streams; fi
    if want loop; then group_loop; fi
    umount_rbdfs
    umount_rbdfuse
    remove_images
}
# The main image is created first in every run (fio, copy and diff use it).
for ((run = 1; run <= repeat; run++)); do
    say "=== run $run of $repeat"
    if want fio || want copy || want diff; then new_image "$tag-$run-main"; fi
    run_once
done
load_end=$(load)

# ------------------------------------------------------------------ table
table=$(python3 - "$results" "$cache_mib" "$machine_log" "$clk_tck" "$(nproc)" <<'PY'
import math, re, statistics, sys
# Machine CPU per measured step and run: [(seconds, busy CPU-seconds,
# share of the CPU time the hypervisor left to the VM, the OSDs'
# CPU-seconds or None in logs from before they were recorded)].
machine = {}
tck = int(sys.argv[4])
for line in open(sys.argv[3]):
    run, name, t0, t1, c0, c1, *osd = line.rstrip("\n").split("\t")
    d = [b - a for a, b in zip(map(int, c0.split(",")), map(int, c1.split(",")))]
    busy = d[0] / tck
    given = (d[0] + d[1]) / sum(d) if sum(d) > 0 else 1.0
    osd_secs = (int(osd[1]) - int(osd[0])) / tck if len(osd) == 2 else None
    machine.setdefault((run, re.sub(r"-%s$" % re.escape(run), "", name)), []).append(
        (float(t1) - float(t0), busy, given, osd_secs))
ncpu = int(sys.argv[5])
def side(run, step, rate):
    """Busy % of the machine, busy CPU-seconds per unit moved (MiB, op,
    copy), the CPUs the hypervisor left to the VM, and the OSDs'
    CPU-seconds per unit (None if not recorded), in one side's step (the
    median over its timed repeats)."""
    v = machine.get((run, step))
    if not v or rate <= 0:
        return None
    secs = statistics.median(x[0] for x in v)
    busy = statistics.median(x[1] for x in v)
    given = statistics.median(x[2] for x in v)
    osd = [x[3] for x in v if x[3] is not None]
    osd_unit = statistics.median(osd) / (rate * secs) if osd else None
    return 100 * busy / secs / ncpu, busy / (rate * secs), ncpu * given, osd_unit
# Client CPU is recorded in seconds per GiB moved; the bounds table works
# per unit of the row: a MiB, or a 4 KiB operation. (Per ext4 copy it is not
# comparable: the client moves more than the tree's bytes.)
per_gib_to_unit = {"MiB/s": 1 / 1024, "IOPS": 4096 / 2**30}
rows, order = {}, []
for line in open(sys.argv[1]):
    run, group, job, unit, me, ref, rv, cpu, rcpu, rss, target, fs_step, ref_step = line.rstrip("\n").split("\t")
    key = (group, job, ref)
    if key not in rows:
        rows[key] = dict(unit=unit, target=target, me=[], rv=[], ratio=[], cpu=[], rcpu=[], rss=[], bound=[])
        order.append(key)
    r = rows[key]
    me, rv = float(me), float(rv)
    r["me"].append(me); r["rv"].append(rv)
    a, b = side(run, fs_step, me), side(run, ref_step, rv)
    if a and b and rv > 0:
        # The ratio rbdfs would reach at its CPU cost per unit if it kept
        # busy every CPU the hypervisor left it (stolen time is not
        # available to it), against the reference's measured rate.
        bound = a[2] / a[1] / rv
        # Client CPU (rbdfs's process, the reference's tool) per unit, and
        # how much rbdfs's process may spend per unit for the target to be
        # within the CPUs: the target's rate leaves a[2] / (t * rv)
        # CPU-seconds per unit, of which the rest of rbdfs's side (the
        # OSD, the kernel, the tool reading the file) takes what it takes
        # today.
        k = per_gib_to_unit.get(unit)
        mine = float(cpu) * k if k and cpu != "-" else None
        theirs = float(rcpu) * k if k and rcpu != "-" else None
        allowed = None
        if mine is not None and target != "-":
            allowed = a[2] / (float(target) * rv) - (a[1] - mine)
        r["bound"].append((a[0], b[0], a[1], b[1], bound, a[3], b[3], mine, theirs, allowed))
    # Judged on the ratios as shown (2 decimals).
    r["ratio"].append(round(me / rv, 2) if rv else math.nan)
    r["cpu"].append(float(cpu)); r["rcpu"].append(float(rcpu)); r["rss"].append(float(rss))
med = statistics.median
def f(x):
    return "-" if x is None or math.isnan(x) else (f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}")
print("| group | job | unit | rbdfs | reference | ref. | ratio min | ratio median | ratio per run | rbdfs CPU s/GiB | ref. CPU s/GiB | rbdfs peak RSS MiB | target |")
print("|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|")
peak = 0
for key in order:
    g, job, ref = key
    r = rows[key]
    peak = max(peak, max(r["rss"]))
    tgt = "-"
    if r["target"] != "-":
        t = float(r["target"])
        # A target counts as met only if every run meets it.
        tgt = f"≥ {t:g}: " + ("met" if min(r["ratio"]) >= t else "**missed**") + " (every run)"
    print(f"| {g} | {job} | {r['unit']} | {f(med(r['me']))} | {ref} | {f(med(r['rv']))} | "
          f"{min(r['ratio']):.2f} | {med(r['ratio']):.2f} | {', '.join(f'{x:.2f}' for x in r['ratio'])} | "
          f"{f(med(r['cpu']))} | {f(med(r['rcpu']))} | {max(r['rss']):.0f} | {tgt} |")
cache = int(sys.argv[2])
print()
print(f"rbdfs peak RSS over all jobs: {peak:.0f} MiB with cache_size={cache} MiB; target ≤ {cache + 48} MiB: "
      + ("met" if peak <= cache + 48 else "**missed**") + ".")
print()
print("What bounds each ratio that has a target (medians over the runs; machine CPU per unit: busy "
      "CPU-seconds of the whole machine, all processes, per MiB, op or copy, split into the OSDs' and "
      "the client's (rbdfs's process; the reference's tool or rbd-fuse); CPU bound: the ratio rbdfs would "
      "reach at its machine CPU per unit with every CPU busy that the hypervisor did not steal, against "
      "the reference's measured rate; allowed: what rbdfs's process may spend per unit for the target "
      "to fit in those CPUs, the rest of its side costing what it did):")
print()
print("| job | reference | machine busy % rbdfs / ref. | machine CPU per unit rbdfs / ref. | of it the OSD rbdfs / ref. | "
      "of it the client rbdfs / ref. | ratio median | CPU bound | rbdfs CPU per unit the target allows | target | what bounds it |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
def mid(values):
    values = [v for v in values if v is not None]
    return med(values) if values else None
for key in order:
    g, job, ref = key
    r = rows[key]
    if r["target"] == "-" or not r["bound"]:
        continue
    t = float(r["target"])
    m = [mid(x[i] for x in r["bound"]) for i in range(10)]
    ratio = med(r["ratio"])
    scale, label = {"MiB/s": (1024, "s/GiB"), "IOPS": (1e6, "µs/op")}.get(r["unit"], (1, "s/copy"))
    def pair(x, y):
        return "-" if x is None or y is None else f"{x * scale:.3g} / {y * scale:.3g}"
    allowed = "-" if m[9] is None else f"{max(m[9], 0) * scale:.3g}"
    if min(r["ratio"]) >= t:
        why = "met"
    elif m[4] >= t:
        why = "not the CPUs: waiting (depth, latency)"
    elif m[9] is not None and m[9] <= 0:
        why = "CPU: the rest of rbdfs's side (OSD, kernel, tool) alone needs more than the target leaves"
    elif m[9] is not None and m[8] is not None and m[9] < m[8]:
        why = f"CPU: the target needs rbdfs below the reference client's own CPU ({100 * m[9] / m[8]:.0f} % of it)"
    elif m[9] is not None and m[7]:
        why = f"CPU: the target needs rbdfs's CPU per unit cut to {100 * m[9] / m[7]:.0f} % of today's"
    else:
        why = "CPU: the target needs less CPU per unit"
    print(f"| {job} | {ref} | {m[0]:.0f} / {m[1]:.0f} | {m[2] * scale:.3g} / {m[3] * scale:.3g} {label} | "
          f"{pair(m[5], m[6])} | {pair(m[7], m[8])} | {ratio:.2f} | {m[4]:.2f} | {allowed} | ≥ {t:g} | {why} |")
PY
)

# How busy the machine was in each measured step (setup steps left out),
# median over the runs: when both sides of a ratio ran with the CPUs
# saturated, the ratio is bounded by CPU per byte, not by waiting.
machine_table=$(python3 - "$machine_log" "$clk_tck" "$(nproc)" <<'PY'
import re, statistics, sys
setup = re.compile(r"^(create|prefill|cluster|rados-cleanup|snap-create|snap-warm-up|diff-writes|diff-warm-up)-")
steps, order = {}, []
for line in open(sys.argv[1]):
    run, name, t0, t1, c0, c1, *osd = line.rstrip("\n").split("\t")
    if setup.match(name):
        continue
    base = re.sub(r"-%s$" % re.escape(run), "", name)
    b0, i0, s0 = map(int, c0.split(","))
    b1, i1, s1 = map(int, c1.split(","))
    total = (b1 - b0) + (i1 - i0) + (s1 - s0)
    if total <= 0:
        continue
    secs = float(t1) - float(t0)
    if base not in steps:
        steps[base] = []
        order.append(base)
    osd_cpus = (int(osd[1]) - int(osd[0])) / int(sys.argv[2]) / secs if len(osd) == 2 else None
    steps[base].append((secs, 100 * (b1 - b0) / total, 100 * (s1 - s0) / total,
                        (b1 - b0) / int(sys.argv[2]) / secs, osd_cpus))
med = statistics.median
def mid(values):
    values = [v for v in values if v is not None]
    return f"{med(values):.2f}" if values else "-"
print(f"| step | seconds | machine busy % | stolen % | busy CPUs (of {sys.argv[3]}) | of them the OSDs |")
print("|---|---:|---:|---:|---:|---:|")
for base in order:
    v = steps[base]
    print(f"| {base} | {med(x[0] for x in v):.1f} | {med(x[1] for x in v):.0f} | {med(x[2] for x in v):.0f} | "
          f"{med(x[3] for x in v):.2f} | {mid(x[4] for x in v)} |")
PY
)

# Every targeted ratio per run, with the share of each side's step the
# hypervisor stole: stolen CPU moves a single ratio by 2x either way, so
# the pairs where neither side lost more than 5 % are the ones to read.
steal_table=$(python3 - "$results" "$machine_log" "$(nproc)" <<'PY'
import re, statistics, sys
steps = {}
for line in open(sys.argv[2]):
    run, name, t0, t1, c0, c1, *_ = line.rstrip("\n").split("\t")
    d = [b - a for a, b in zip(map(int, c0.split(",")), map(int, c1.split(",")))]
    if sum(d) > 0:
        base = re.sub(r"-%s$" % re.escape(run), "", name)
        # busy CPU-seconds (jiffies), seconds, stolen share, CPUs left
        steps.setdefault((run, base), []).append((d[0], float(t1) - float(t0), d[2] / sum(d), (d[0] + d[1]) / sum(d)))
ncpu = int(sys.argv[3])
med = statistics.median
rows, order = {}, []
for line in open(sys.argv[1]):
    run, group, job, unit, me, ref, rv, cpu, rcpu, rss, target, fs_step, ref_step = line.rstrip("\n").split("\t")
    a, b = steps.get((run, fs_step)), steps.get((run, ref_step))
    me, rv = float(me), float(rv)
    if target == "-" or not a or not b or me <= 0 or rv <= 0:
        continue
    key = (job, ref, target)
    if key not in rows:
        rows[key] = ([], [])
        order.append(key)
    stolen_a, stolen_b = med(x[2] for x in a), med(x[2] for x in b)
    # The CPU bound of this run alone (as in the table above).
    per_unit = med(x[0] for x in a) / 100 / (me * med(x[1] for x in a))
    bound = ncpu * med(x[3] for x in a) / per_unit / rv
    clean = stolen_a <= 0.05 and stolen_b <= 0.05
    rows[key][0 if clean else 1].append(
        f"{run}: {me / rv:.2f}" + (f" (bound {bound:.2f})" if clean else f" ({100 * stolen_a:.0f} / {100 * stolen_b:.0f} %)"))
print("| job | reference | target | clean runs: ratio (CPU bound) | other runs: ratio (stolen % rbdfs / ref.) |")
print("|---|---|---|---|---|")
for key in order:
    clean, other = rows[key]
    print(f"| {key[0]} | {key[1]} | ≥ {float(key[2]):g} | {', '.join(clean) or '-'} | {', '.join(other) or '-'} |")
PY
)

# User and system CPU per GiB of the measured FUSE daemon (rbdfs's, or
# rbd-fuse's in its steps), medians over the runs.
split_table=$(python3 - "$cpu_split_log" <<'PY'
import re, statistics, sys
steps, order = {}, []
for line in open(sys.argv[1]):
    run, name, user, system = line.rstrip("\n").split("\t")
    base = re.sub(r"-%s$" % re.escape(run), "", name)
    if base not in steps:
        steps[base] = []
        order.append(base)
    steps[base].append((float(user), float(system)))
med = statistics.median
print("| step | user s/GiB | system s/GiB | system share |")
print("|---|---:|---:|---:|")
for base in order:
    u, s = med(x[0] for x in steps[base]), med(x[1] for x in steps[base])
    print(f"| {base} | {u:.2f} | {s:.2f} | {100 * s / (u + s) if u + s else 0:.0f} % |")
PY
)

report=$(
    echo "$machine"
    echo "- load average (1/5/15 min): $load_start at the start, $load_end at the end; the run took $(((SECONDS + 30) / 60)) min"
    echo
    echo "$table"
    echo
    echo "rbdfs and ref.: medians over the runs (MiB/s, IOPS, or 1/s: copies per second). Ratio: rbdfs/reference"
    echo "per run. CPU: user+system seconds per GiB moved (rbdfs: /proc/PID/stat around the job; references:"
    echo "their own process, rbd-fuse's by /proc/PID/stat). Peak RSS: rbdfs's VmRSS sampled every 0.2 s"
    echo "during the job, the maximum over the runs. streams: the aggregate of four fio streams, each"
    echo "stream's share below. loop: fio and an ext4 on /dev/loopN over each client's image file; the"
    echo "ext4 row is in copies per second, so its ratio is rbd-fuse's time over rbdfs's."
    echo
    cat "$notes"
    echo
    echo "Machine CPU in each measured step (all processes: OSD, mon, client, tool; medians over the runs;"
    echo "busy = user+system+irq time, stolen = time the hypervisor gave to other guests; a step's rbdfs"
    echo "and reference sides both near 100 % busy means the machine's CPUs, not waiting, set both rates):"
    echo
    echo "$machine_table"
    echo
    echo "Each targeted ratio per run, read by how much CPU the hypervisor stole from each side's step: clean runs"
    echo "(both sides at most 5 % stolen) with the run's CPU bound, the others with each side's stolen share:"
    echo
    echo "$steal_table"
    echo
    echo "The FUSE daemon's CPU per GiB moved, user and system apart (medians over the runs; steps named"
    echo "*fuse* are rbd-fuse's, the others rbdfs's; system time is the kernel's work in the daemon's"
    echo "threads: FUSE request and reply pages, the sockets to the OSDs, page faults):"
    echo
    echo "$split_table"
)
echo "$report"
[[ -z $out_file ]] || echo "$report" >"$out_file"

((failed == 0)) || exit 1
ok=1
