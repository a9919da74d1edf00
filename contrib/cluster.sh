#!/usr/bin/env bash
# Throwaway single-node Ceph cluster (1 mon, 1 or more bluestore OSDs on
# sparse files, optional mgr) living entirely under one directory, on
# 127.0.0.1.
#
#   contrib/cluster.sh start [--with-mgr] [--osds N] [--ec] [DIR]
#   contrib/cluster.sh stop|status|destroy [DIR]
#
# --with-mgr  also start a mgr (pool quotas are only enforced with one).
# --osds N    N OSDs (default 1).  With N >= 2 the pools are replicated
#             size min(N,3), min_size 2 (1 for N=2), failure domain osd,
#             and a SIGKILLed OSD is marked down within a few seconds
#             (osd heartbeat grace = 6; peers also report a refused
#             connection at once); it is never marked out automatically.
# --ec        also an erasure-coded pool `rbd-ec` (profile rbdfs-ec: k=2
#             m=1, failure domain osd, allow_ec_overwrites, application
#             rbd), usable as an RBD data pool:
#             `rbd create --data-pool rbd-ec rbd/IMG`.  Needs --osds 3 or
#             more (bluestore OSDs, which EC overwrites require).
# --osds and --ec are recorded at creation; later starts reuse them (and a
# start restarts any daemon of the cluster that is not running, e.g. an
# OSD a test killed).
#
# DIR defaults to ${RBDFS_CLUSTER_DIR:-/var/tmp/rbdfs-cluster}.  The mon
# listens on 127.0.0.1:${RBDFS_CLUSTER_PORT:-40789} (msgr v2) and PORT+1
# (msgr v1); the other daemons bind ports PORT+2..PORT+49.  The port is
# recorded at creation time; later starts reuse the recorded one.
#
# Clients only need the generated config: `rbd -c DIR/ceph.conf ls`.
set -euo pipefail

prog=$(basename "$0")

usage() {
    cat >&2 <<EOF
usage: $prog start [--with-mgr] [--osds N] [--ec] [DIR]
       $prog stop|status|destroy [DIR]
DIR defaults to \${RBDFS_CLUSTER_DIR:-/var/tmp/rbdfs-cluster}
EOF
    exit 2
}

die() { echo "$prog: error: $*" >&2; exit 1; }
log() { echo "$prog: $*" >&2; }

# ---------------------------------------------------------------- arguments
[[ $# -ge 1 ]] || usage
cmd=$1; shift
with_mgr=0
want_osds=
want_ec=0
dir_arg=
while [[ $# -gt 0 ]]; do
    a=$1; shift
    case $a in
        --with-mgr) with_mgr=1 ;;
        --osds)
            [[ $# -gt 0 && $1 =~ ^[1-9][0-9]?$ ]] || { echo "$prog: --osds needs a count (1-99)" >&2; usage; }
            want_osds=$1; shift ;;
        --osds=*)
            want_osds=${a#--osds=}
            [[ $want_osds =~ ^[1-9][0-9]?$ ]] || { echo "$prog: --osds needs a count (1-99)" >&2; usage; } ;;
        --ec) want_ec=1 ;;
        -h|--help) usage ;;
        -*) echo "$prog: unknown option $a" >&2; usage ;;
        *) [[ -z $dir_arg ]] || usage; dir_arg=$a ;;
    esac
done
case $cmd in start|stop|status|destroy) ;; -h|--help) usage ;; *) usage ;; esac
[[ $with_mgr = 0 || $cmd = start ]] || usage
[[ -z $want_osds && $want_ec = 0 ]] || [[ $cmd = start ]] || usage
if ((want_ec)) && [[ -n $want_osds ]] && ((want_osds < 3)); then
    echo "$prog: --ec needs --osds 3 or more (k=2 m=1 over distinct OSDs)" >&2
    exit 2
fi

DIR=${dir_arg:-${RBDFS_CLUSTER_DIR:-/var/tmp/rbdfs-cluster}}
[[ -n $DIR ]] || die "empty cluster directory"
DIR=$(realpath -m -- "$DIR")
[[ $DIR != / ]] || die "refusing to use / as cluster directory"
CONF=$DIR/ceph.conf
MARKER=$DIR/.rbdfs-cluster      # proves DIR is ours (guards rm -rf)
PARAMS=$DIR/cluster.env         # fsid, port, osd uuids, osd count, ec
READY=$DIR/.initialized         # set once mkfs + pools are done

READY_TIMEOUT=${RBDFS_CLUSTER_TIMEOUT:-90}
STOP_TIMEOUT=30
MON_ID=a
MGR_ID=x
# Recorded at creation (load_params); 1 OSD, no EC pool until then.
OSDS=1
EC=0
OSD_UUIDS=

osd_ids() { seq 0 $((OSDS - 1)); }

# --------------------------------------------------------------- helpers
ceph_cli() { timeout 60 ceph -c "$CONF" --connect-timeout 30 "$@"; }

# pid of a running daemon of ours (checked against its command line, so a
# recycled pid is never mistaken for it), or nothing.
daemon_pid() {
    local name=$1 pidfile=$DIR/run/$1.pid pid cmdline
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile") || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    if [[ $cmdline == *" -c $CONF "* ]]; then
        echo "$pid"
    fi
}

daemon_running() { [[ -n $(daemon_pid "$1") ]]; }

all_osds_running() {
    local i
    for i in $(osd_ids); do
        daemon_running "osd.$i" || return 1
    done
}

show_logs() {
    local f
    for f in "$DIR"/log/*.log "$DIR"/log/*.out; do
        [[ -s $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n "${1:-25}" "$f" >&2 || true
    done
}

# Real I/O round trip through the rbd pool (object removed afterwards).
probe() {
    local t=$1 tmp rc=0 obj
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/rbdfs-probe.XXXXXX")
    obj=rbdfs-probe.$$.${tmp##*.}
    echo "probe $obj $(date +%s%N)" >"$tmp/in"
    if timeout "$t" rados -c "$CONF" -p rbd put "$obj" "$tmp/in" >/dev/null 2>&1 &&
       timeout "$t" rados -c "$CONF" -p rbd get "$obj" "$tmp/out" >/dev/null 2>&1 &&
       cmp -s "$tmp/in" "$tmp/out"; then
        timeout "$t" rados -c "$CONF" -p rbd rm "$obj" >/dev/null 2>&1 || true
    else
        rc=1
    fi
    rm -rf "$tmp"
    return $rc
}

write_conf() {
    local fsid=$1 port=$2
    local v1=$((port + 1)) pmin=$((port + 2)) pmax=$((port + 49))
    local size=1 min_size=1 memory=1610612736 multi=
    if ((OSDS >= 2)); then
        size=$((OSDS < 3 ? OSDS : 3))
        min_size=$((size >= 3 ? 2 : 1))
        # Several OSDs share the machine's memory.
        memory=1073741824
        # A dead OSD (SIGKILL) is marked down quickly, and never out (its
        # data stays where it is until it comes back).
        multi='
osd heartbeat interval = 1
osd heartbeat grace = 6
mon osd down out interval = 0
mon osd min down reporters = 1
mon warn on osd down out interval zero = false'
    fi
    cat >"$CONF.tmp" <<EOF
# Generated by contrib/cluster.sh; rewritten on every start.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port,v1:127.0.0.1:$v1]
public network = 127.0.0.1/32
ms bind ipv6 = false
ms bind port min = $pmin
ms bind port max = $pmax
keyring = $DIR/keyring
run dir = $DIR/run
crash dir = $DIR/crash
client mount timeout = 30

osd pool default size = $size
osd pool default min size = $min_size
osd pool default pg autoscale mode = off
# Failure domain osd: all OSDs live on this one host.
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
$multi

# Clients that daemonize (rbd-fuse, ...) would otherwise log to /var/log/ceph.
[client]
log file = $DIR/log/\$name.log

[mon]
mon data = $DIR/mon.\$id
mon cluster log file = $DIR/log/cluster.log
mon data avail warn = 2
mon data avail crit = 1
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok

[osd]
osd data = $DIR/osd.\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 16G
bluestore fsck on mkfs = false
osd memory target = $memory
# The OSDs sit on sparse files, which bluestore classes as hdd, and an hdd
# sleeps 5 s between snapshot-trim steps and between steps of deleting a
# removed pool's PGs. The tests remove thousands of snapshots and dozens of
# pools a run; at that pace the space never comes back and a cluster kept
# for the next run fills its 16 GiB (nearfull after a day of runs).
osd snap trim sleep hdd = 0
osd snap trim sleep hybrid = 0
osd delete sleep hdd = 0
osd delete sleep hybrid = 0
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok

[mgr]
mgr data = $DIR/mgr.\$id
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
EOF
    mv -f "$CONF.tmp" "$CONF"
}

# Parameters recorded at creation: FSID, PORT, OSD_UUID (osd.0),
# OSD_UUIDS (all OSDs, in id order), OSDS, EC.  Files written before
# --osds existed hold only OSD_UUID: one OSD.
load_params() {
    FSID=$(sed -n 's/^FSID=//p' "$PARAMS")
    PORT=$(sed -n 's/^PORT=//p' "$PARAMS")
    OSD_UUIDS=$(sed -n 's/^OSD_UUIDS=//p' "$PARAMS")
    [[ -n $OSD_UUIDS ]] || OSD_UUIDS=$(sed -n 's/^OSD_UUID=//p' "$PARAMS")
    OSDS=$(sed -n 's/^OSDS=//p' "$PARAMS")
    OSDS=${OSDS:-1}
    EC=$(sed -n 's/^EC=//p' "$PARAMS")
    EC=${EC:-0}
    [[ -n $FSID && -n $PORT && -n $OSD_UUIDS ]] || die "$PARAMS is incomplete"
    local n
    n=$(wc -w <<<"$OSD_UUIDS")
    ((n == OSDS)) || die "$PARAMS: OSDS=$OSDS but $n OSD uuids"
}

# Just the OSD count, for stop/status (also of a half-made cluster).
load_osd_count() {
    local n=
    [[ -f $PARAMS ]] && n=$(sed -n 's/^OSDS=//p' "$PARAMS")
    OSDS=${n:-1}
}

osd_uuid() { local u; read -ra u <<<"$OSD_UUIDS"; echo "${u[$1]}"; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_mon_port() {
    local p
    for p in "$1" $(($1 + 1)); do
        port_in_use "$p" &&
            die "127.0.0.1:$p is already in use (another cluster?); pick another base port with RBDFS_CLUSTER_PORT"
    done
    return 0
}

# Start one daemon (they daemonize themselves and write run/<name>.pid).
start_daemon() {
    local type=$1 id=$2 name=$1.$2 i
    if daemon_running "$name"; then
        log "$name already running (pid $(daemon_pid "$name"))"
        return 0
    fi
    rm -f "$DIR/run/$name.pid" "$DIR/run/$name.asok"
    if ! "ceph-$type" -c "$CONF" -i "$id" >>"$DIR/log/$name.out" 2>&1 9>&-; then
        show_logs 40
        die "ceph-$type -i $id failed to start"
    fi
    for ((i = 0; i < 100; i++)); do
        daemon_running "$name" && return 0
        sleep 0.1
    done
    show_logs 40
    die "$name did not come up (no live pid in $DIR/run/$name.pid)"
}

# First-time creation: keys, monmap, mon mkfs.  Leaves the mon running.
create_mon() {
    local port=${RBDFS_CLUSTER_PORT:-40789}
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port + 49 > 65535)); then
        die "bad RBDFS_CLUSTER_PORT '$port'"
    fi
    check_mon_port "$port"
    local fsid uuids=() i
    fsid=$(cat /proc/sys/kernel/random/uuid)
    OSDS=${want_osds:-1}
    EC=$want_ec
    ((EC == 0 || OSDS >= 3)) || die "--ec needs --osds 3 or more"
    for ((i = 0; i < OSDS; i++)); do
        uuids+=("$(cat /proc/sys/kernel/random/uuid)")
    done
    OSD_UUIDS=${uuids[*]}

    log "creating new cluster in $DIR (mon 127.0.0.1:$port)"
    mkdir -p "$DIR"/{run,log,crash,mon.$MON_ID}
    for i in $(osd_ids); do mkdir -p "$DIR/osd.$i"; done
    printf 'FSID=%s\nPORT=%s\nOSD_UUID=%s\nOSD_UUIDS=%s\nOSDS=%s\nEC=%s\n' \
        "$fsid" "$port" "${uuids[0]}" "$OSD_UUIDS" "$OSDS" "$EC" >"$PARAMS"
    write_conf "$fsid" "$port"

    local kr=$DIR/keyring
    rm -f "$kr"
    ceph-authtool --create-keyring "$kr" --gen-key -n mon. \
        --cap mon 'allow *' >/dev/null
    ceph-authtool "$kr" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' \
        --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    for i in $(osd_ids); do
        ceph-authtool "$kr" --gen-key -n "osd.$i" \
            --cap mon 'allow profile osd' --cap mgr 'allow profile osd' \
            --cap osd 'allow *' >/dev/null
    done
    ceph-authtool "$kr" --gen-key -n "mgr.$MGR_ID" \
        --cap mon 'allow profile mgr' --cap osd 'allow *' \
        --cap mds 'allow *' >/dev/null
    chmod 600 "$kr"

    monmaptool --create --fsid "$fsid" \
        --addv "$MON_ID" "[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]" \
        "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i "$MON_ID" --monmap "$DIR/monmap" \
        --keyring "$kr" >>"$DIR/log/mon.$MON_ID.out" 2>&1 ||
        { show_logs; die "ceph-mon --mkfs failed"; }
    start_daemon mon "$MON_ID"
}

# First-time creation of OSD $1 (needs the mon).  Does not start it.
create_osd() {
    local want=$1 id uuid
    uuid=$(osd_uuid "$want")
    id=$(ceph_cli osd new "$uuid" "$want") ||
        { show_logs; die "'ceph osd new' failed"; }
    [[ $id = "$want" ]] || die "'ceph osd new' returned id '$id', expected $want"
    ceph-osd -c "$CONF" -i "$want" --mkfs --osd-uuid "$uuid" \
        >>"$DIR/log/osd.$want.out" 2>&1 ||
        { show_logs; die "ceph-osd --mkfs of osd.$want failed"; }
}

# Create the pools that are missing (in parallel: each monitor command
# waits for a paxos round of about a second, and they batch well).
ensure_pools() {
    local pools pool pg pids=() rc=0 p
    pools=$(ceph_cli osd pool ls) || { echo "cannot list pools" >&2; return 1; }
    for pool in rbd:32 rbd-data:8 $( ((EC)) && echo rbd-ec:8); do
        pg=${pool#*:}; pool=${pool%%:*}
        grep -qx -- "$pool" <<<"$pools" && continue
        (
            if [[ $pool = rbd-ec ]]; then
                ceph_cli osd erasure-code-profile set rbdfs-ec k=2 m=1 \
                    crush-failure-domain=osd >/dev/null 2>&1 ||
                    { echo "cannot create erasure-code profile rbdfs-ec" >&2; exit 1; }
                ceph_cli osd pool create "$pool" "$pg" "$pg" erasure rbdfs-ec >/dev/null 2>&1 ||
                    { echo "cannot create pool $pool" >&2; exit 1; }
                ceph_cli osd pool set "$pool" allow_ec_overwrites true >/dev/null 2>&1 ||
                    { echo "cannot set allow_ec_overwrites on $pool" >&2; exit 1; }
                # min_size k, not k+1: a test cluster keeps serving with
                # one OSD down (production keeps k+1).
                ceph_cli osd pool set "$pool" min_size 2 >/dev/null 2>&1 ||
                    { echo "cannot set min_size on $pool" >&2; exit 1; }
            else
                ceph_cli osd pool create "$pool" "$pg" "$pg" >/dev/null 2>&1 ||
                    { echo "cannot create pool $pool" >&2; exit 1; }
            fi
            ceph_cli osd pool application enable "$pool" rbd >/dev/null 2>&1 ||
                { echo "cannot enable application rbd on pool $pool" >&2; exit 1; }
        ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || rc=1
    done
    return $rc
}

osd_active() {
    local out i
    for i in $(osd_ids); do
        out=$(timeout 5 ceph --admin-daemon "$DIR/run/osd.$i.asok" status 2>/dev/null) ||
            return 1
        [[ $out == *'"state": "active"'* ]] || return 1
    done
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) left
    while :; do
        left=$((deadline - SECONDS))
        ((left > 0)) || break
        # Probe only once the OSD has booted: a client that starts with an
        # osdmap still naming a dead OSD instance stalls for ~10 s.
        if osd_active; then
            probe $((left < 15 ? left : 15)) && return 0
        fi
        for n in "mon.$MON_ID" $(osd_ids | sed 's/^/osd./'); do
            daemon_running "$n" || { show_logs 40; die "$n died while waiting for I/O"; }
        done
        sleep 0.2
    done
    show_logs 40
    die "cluster in $DIR did not serve I/O within ${READY_TIMEOUT}s"
}

# Serialize start/stop/destroy on one DIR (several shells may run
# contrib/test.sh at once).  Claims an absent or empty DIR for us first.
lock_dir() {
    if [[ ! -f $MARKER ]]; then
        if [[ -e $DIR && -n $(ls -A -- "$DIR" 2>/dev/null) ]]; then
            die "$DIR exists, is not empty and was not made by $prog; refusing to touch it"
        fi
        mkdir -p "$DIR"
        touch "$MARKER"
    fi
    exec 9>>"$DIR/.lock"
    flock -w 300 9 || die "timed out waiting for the lock on $DIR/.lock"
}

# ---------------------------------------------------------------- commands
do_start() {
    command -v ceph-mon >/dev/null || die "ceph-mon not found (apt-get install ceph-mon ceph-osd ceph-common)"
    command -v ceph-osd >/dev/null || die "ceph-osd not found"
    local t0=$SECONDS
    lock_dir

    if [[ -f $READY ]]; then
        # Existing cluster: (re)start whatever is not running.
        load_params
        if [[ -n $want_osds && $want_osds != "$OSDS" ]] || ((want_ec && !EC)); then
            log "note: $DIR was created with $OSDS OSD(s)$( ((EC)) && echo ' and an EC pool'); ignoring --osds/--ec"
        fi
        if [[ -n ${RBDFS_CLUSTER_PORT:-} && $RBDFS_CLUSTER_PORT != "$PORT" ]]; then
            log "note: $DIR was created with port $PORT; ignoring RBDFS_CLUSTER_PORT=$RBDFS_CLUSTER_PORT"
        fi
        # Rewriting is atomic and harmless for running daemons; it lets
        # client-side settings follow this script.
        mkdir -p "$DIR"/{run,log,crash}
        write_conf "$FSID" "$PORT"
        if daemon_running "mon.$MON_ID" && all_osds_running &&
           { ((with_mgr == 0)) || daemon_running "mgr.$MGR_ID"; } &&
           probe 10; then
            log "cluster in $DIR is already running and healthy"
            print_usage
            return 0
        fi
        log "starting existing cluster in $DIR"
        daemon_running "mon.$MON_ID" || check_mon_port "$PORT"
        start_daemon mon "$MON_ID"
    else
        if [[ -n $(find "$DIR" -mindepth 1 -maxdepth 1 ! -name .lock \
                   ! -name .rbdfs-cluster -print -quit) ]]; then
            log "$DIR holds an incomplete cluster from an earlier run; recreating it"
            do_stop
            find "$DIR" -mindepth 1 -maxdepth 1 ! -name .lock ! -name .rbdfs-cluster \
                -exec rm -rf -- {} +
        fi
        create_mon
    fi
    load_params

    # Pool creation only needs the mon; overlap it with the OSD's start.
    local pools_pid
    ensure_pools &
    pools_pid=$!
    # mkfs of several OSDs in parallel (each takes a few seconds).
    local mkfs_pids=() i p
    for i in $(osd_ids); do
        [[ -f $DIR/osd.$i/mkfs_done ]] && continue
        mkdir -p "$DIR/osd.$i"
        create_osd "$i" &
        mkfs_pids+=($!)
    done
    for p in "${mkfs_pids[@]}"; do
        wait "$p" || die "OSD creation failed"
    done
    for i in $(osd_ids); do
        start_daemon osd "$i"
    done
    if ((with_mgr)); then
        mkdir -p "$DIR/mgr.$MGR_ID"
        start_daemon mgr "$MGR_ID"
    fi
    wait "$pools_pid" || { show_logs; die "pool setup failed"; }
    wait_ready
    touch "$READY"
    log "cluster ready in $((SECONDS - t0))s"
    print_usage
}

print_usage() {
    echo "conf: $CONF"
    echo "example: rbd -c $CONF ls"
}

# Stop one daemon by its pid file: SIGTERM, then SIGKILL after a timeout.
stop_daemon() {
    local name=$1 pid i
    pid=$(daemon_pid "$name")
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) did not exit after ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        stopped+=("$name")
    fi
    rm -f "$DIR/run/$name.pid" "$DIR/run/$name.asok"
}

# OSD and mgr first, while the mon can still record that they went down
# (otherwise the OSD waits for the mon on shutdown and the next start
# waits for the mon to notice the old instance is gone).
do_stop() {
    local stopped=()
    local i
    load_osd_count
    for i in $(osd_ids); do
        stop_daemon "osd.$i"
    done
    stop_daemon "mgr.$MGR_ID"
    stop_daemon "mon.$MON_ID"
    if ((${#stopped[@]})); then
        log "stopped ${stopped[*]}"
    else
        log "no daemons running in $DIR"
    fi
}

do_status() {
    [[ -f $CONF ]] || { echo "no cluster in $DIR"; return 1; }
    local name pid
    load_osd_count
    for name in "mon.$MON_ID" $(osd_ids | sed 's/^/osd./') "mgr.$MGR_ID"; do
        pid=$(daemon_pid "$name")
        if [[ -n $pid ]]; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
        fi
    done
    # Without our mon there is nothing to wait for.
    if ! daemon_running "mon.$MON_ID"; then
        echo "I/O: FAILED (mon not running)"
        return 1
    fi
    if probe 10; then
        echo "I/O: ok"
        return 0
    fi
    echo "I/O: FAILED"
    return 1
}

do_destroy() {
    [[ -e $DIR ]] || { log "$DIR does not exist"; return 0; }
    [[ -f $MARKER ]] || die "$DIR was not made by $prog; refusing to delete it"
    lock_dir
    do_stop
    rm -rf -- "$DIR"
    log "removed $DIR"
}

case $cmd in
    start) do_start ;;
    stop)
        if [[ -f $MARKER ]]; then
            lock_dir
            do_stop
        elif [[ -e $DIR ]]; then
            die "$DIR was not made by $prog"
        else
            log "$DIR does not exist"
        fi ;;
    status) do_status ;;
    destroy) do_destroy ;;
esac
