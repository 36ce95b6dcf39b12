#!/usr/bin/env bash
# Start a real S3-compatible object store on 127.0.0.1 for Hourglass tests, from nothing.
#
#   s3server.sh start    install if missing, start a fresh server, wait until a signed
#                         PUT/GET/DELETE works, print shell lines: eval "$(tests/s3server.sh start)"
#   s3server.sh stop     stop it (by the PIDs it recorded), remove its data, keep its logs
#   s3server.sh status   exit 0 and print the lines again if it answers
#
# Debian 12's Ceph 16.2 (Pacific): one mon, one OSD (BlueStore on a sparse file, or memstore),
#   one radosgw (beast); auth none inside the cluster, S3 SigV4 keys at the gateway.
#   The packages are in .ci/debian-packages (make deps); missing, the start installs them as
#   root (~60 s once). Then ~8 s per start (memstore ~4.5 s). Adapted from the team's s3-server.sh.
#
# Knobs: S3_DIR (state, default /tmp/hourglass-s3), S3_PORT (default 17480), CEPH_MON_PORT
# (13300; the OSD takes ports from Ceph's 6800-7300 range), CEPH_STORE (bluestore | memstore),
# CEPH_OSD_BYTES (the BlueStore file's size, default 10 GiB),
# S3_ACCESS_KEY, S3_SECRET_KEY, S3_TLS=1 (serve https only, with a certificate for IP 127.0.0.1
# from a CA made in $S3_DIR/tls; S3_CA_FILE names that CA's certificate).
#
#   s3server.sh gateway-kill    SIGKILL radosgw only (mon and OSD keep the data)
#   s3server.sh gateway-start   start radosgw again on the same port and wait until it answers
# Everything listens on 127.0.0.1 only. Only processes whose command line names $S3_DIR are
# ever signalled.
set -euo pipefail

S3_SERVER=${S3_SERVER:-ceph}
S3_DIR=$(readlink -m "${S3_DIR:-/tmp/hourglass-s3}")
S3_PORT=${S3_PORT:-17480}
CEPH_MON_PORT=${CEPH_MON_PORT:-13300}
CEPH_STORE=${CEPH_STORE:-bluestore}
CEPH_OSD_BYTES=${CEPH_OSD_BYTES:-10737418240}  # the OSD's sparse file (bluestore)
ACCESS=${S3_ACCESS_KEY:-hourglass-access}
SECRET=${S3_SECRET_KEY:-hourglass-secret-0123456789}
S3_TLS=${S3_TLS:-0}
if [ "$S3_TLS" = 1 ]; then EP="https://127.0.0.1:$S3_PORT"; else EP="http://127.0.0.1:$S3_PORT"; fi
CA="$S3_DIR/tls/ca.pem"
SELF=$(readlink -f "$0")
T0=$(date +%s.%N)

log() { printf '[s3-server %5.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- process handling: only our own PIDs, recorded in $S3_DIR/run/*.pid -------------------
alive() {  # running and not a zombie
  [ -r "/proc/$1/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
ours() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$S3_DIR"; }
stop_pids() {  # stop_pids PIDFILE...: SIGTERM, wait up to 10 s, then SIGKILL
  local f p pids=()
  for f in "$@"; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    if [ -n "$p" ] && alive "$p" && ours "$p"; then kill "$p" 2>/dev/null || true; pids+=("$p"); fi
    rm -f "$f"
  done
  for _ in $(seq 1 100); do
    local left=0
    for p in "${pids[@]}"; do alive "$p" && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do alive "$p" && ours "$p" && kill -9 "$p" 2>/dev/null || true; done
  [ ${#pids[@]} -gt 0 ] && log "stopped PIDs ${pids[*]}"
  return 0
}
stop_all() {  # in order: gateway, then OSD, then mon (each waits on the next one to leave cleanly)
  local f g
  for g in 'client.*' 'osd.*' 'mon.*' '*'; do
    local fs=()
    for f in "$S3_DIR"/run/$g.pid; do [ -f "$f" ] && fs+=("$f"); done
    stop_pids "${fs[@]}"
  done
}
all_alive() {
  local f n=0
  for f in "$S3_DIR"/run/*.pid; do
    [ -f "$f" ] || return 1
    alive "$(cat "$f")" || return 1; n=$((n+1))
  done
  [ $n -gt 0 ]
}

# --- signed S3 round trip with curl (SigV4; x-amz-content-sha256 is required by radosgw) ---
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3curl() {  # s3curl METHOD PATH [DATAFILE] -> prints HTTP code
  local m=$1 p=$2 f=${3:-} sha=$EMPTY_SHA extra=()
  if [ -n "$f" ]; then sha=$(sha256sum "$f" | cut -d' ' -f1); extra=(--data-binary "@$f"); fi
  [ "$S3_TLS" = 1 ] && extra+=(--cacert "$CA")
  curl -s -o /dev/null -w '%{http_code}' -m 10 --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$ACCESS:$SECRET" -H "x-amz-content-sha256: $sha" -X "$m" "${extra[@]}" "$EP$p" || true
}
probe() {
  local b=/hg-ready-probe f="$S3_DIR/run/probe.txt" c
  printf 'hourglass probe\n' > "$f"
  c=$(s3curl PUT $b); [ "$c" = 200 ] || [ "$c" = 409 ] || return 1
  [ "$(s3curl PUT $b/obj "$f")" = 200 ] || return 1
  [ "$(s3curl GET $b/obj)" = 200 ] || return 1
  [ "$(s3curl DELETE $b/obj)" = 204 ] || return 1
  [ "$(s3curl DELETE $b)" = 204 ] || return 1
}
wait_ready() {  # wait_ready SECONDS
  local deadline=$(( $(date +%s) + $1 )) f
  until probe; do
    for f in "$S3_DIR"/run/*.pid; do
      [ -f "$f" ] || continue
      alive "$(cat "$f")" || { tail -n 20 "$S3_DIR"/log/*.log >&2 || true; die "$(basename "$f" .pid) died during start"; }
    done
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$S3_DIR"/log/*.log >&2 || true; die "not ready after $1 s"; }
    sleep 0.2
  done
}
print_env() {
  cat <<EOF
export S3_ENDPOINT=$EP
export S3_ACCESS_KEY=$ACCESS
export S3_SECRET_KEY=$SECRET
export S3_REGION=us-east-1
export S3_SERVER_KIND=$(cat "$S3_DIR/server" 2>/dev/null || echo "$S3_SERVER")
export S3_STOP="S3_DIR=$S3_DIR $SELF stop"
EOF
  [ "$S3_TLS" = 1 ] && echo "export S3_CA_FILE=$CA"
  return 0
}
port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# --- ceph --------------------------------------------------------------------------------
install_ceph() {
  local b missing=0
  for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl; do
    command -v "$b" >/dev/null || missing=1
  done
  [ $missing = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "Ceph packages missing and not root: apt-get install ceph-mon ceph-osd radosgw ceph-common"
  log "installing Debian packages ceph-mon ceph-osd radosgw ceph-common (one time)"
  local pkgs=(ceph-mon ceph-osd radosgw ceph-common)
  command -v uuidgen >/dev/null || pkgs+=(uuid-runtime)
  command -v curl >/dev/null || pkgs+=(curl)
  local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${pkgs[@]}" >&2 || {
    "${apt[@]}" update >&2
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${pkgs[@]}" >&2; }
}
make_tls() {  # a throw-away CA and a certificate for IP 127.0.0.1 signed by it
  local T=$S3_DIR/tls
  mkdir -p "$T"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hourglass test CA" \
    -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$T/ext.cnf"
  openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
    -days 2 -extfile "$T/ext.cnf" -out "$T/server.pem" 2>/dev/null
}
frontend() {
  if [ "$S3_TLS" = 1 ]; then
    echo "beast ssl_endpoint=127.0.0.1:$S3_PORT ssl_certificate=$S3_DIR/tls/server.pem ssl_private_key=$S3_DIR/tls/server.key"
  else
    echo "beast endpoint=127.0.0.1:$S3_PORT"
  fi
}
start_gateway() {
  local D=$S3_DIR C=$S3_DIR/ceph.conf
  radosgw -n client.rgw.a -c "$C" >> "$D/log/daemons.out" 2>&1   # creates its pools once osd.0 is up
  local deadline=$(( $(date +%s) + 120 )) tls=()
  [ "$S3_TLS" = 1 ] && tls=(--cacert "$CA")
  until curl -s -o /dev/null -m 2 "${tls[@]}" "$EP/"; do
    [ -f "$D/run/client.rgw.a.pid" ] && ! alive "$(cat "$D/run/client.rgw.a.pid")" && die "radosgw died: $(tail -n 5 "$D/log/client.rgw.a.log")"
    [ "$(date +%s)" -lt "$deadline" ] || die "radosgw not answering after 120 s"
    sleep 0.2
  done
  log "radosgw answers on $EP"
}
start_ceph() {
  install_ceph
  local D=$S3_DIR FSID UUID C
  [ "$S3_TLS" = 1 ] && make_tls
  mkdir -p "$D"/{run,log,mon/a,osd/0,rgw}
  FSID=$(uuidgen); UUID=$(uuidgen); C="$D/ceph.conf"
  cat > "$C" <<EOF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:$CEPH_MON_PORT
mon_initial_members = a
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
# no cephx inside this throw-away cluster; S3 clients still sign with SigV4 at the gateway
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# radosgw otherwise insists on 'secure' mode, which auth none cannot give
ms_mon_client_mode = crc
run_dir = $D/run
admin_socket = $D/run/\$name.asok
log_file = $D/log/\$name.log
pid_file = $D/run/\$name.pid
keyring = $D/keyring
# one OSD: size-1 pools, few PGs, no autoscaler (there is no mgr)
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
mon_max_pg_per_osd = 1000
mon_data_avail_warn = 1
# the mon refuses to start below 5 % free by default; a busy CI disk is not its concern here
mon_data_avail_crit = 0
# each pool radosgw creates is an osdmap epoch; the default 1 s paxos interval makes start ~10 s slower
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
# a killed radosgw's watches on its control objects hold up the next one until they time out
osd_client_watch_timeout = 5
[mon]
mon_data = $D/mon/\$id
mon_cluster_log_file = $D/log/cluster.log
[osd]
osd_data = $D/osd/\$id
osd_objectstore = $CEPH_STORE
bluestore_block_create = true
bluestore_block_size = $CEPH_OSD_BYTES
osd_memory_target = 939524096
memstore_device_bytes = 4294967296
[client]
rgw_data = $D/rgw
rgw_frontends = $(frontend)
rgw_thread_pool_size = 64
EOF
  : > "$D/keyring"
  monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$CEPH_MON_PORT]" "$D/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$D/monmap" -c "$C"
  ceph-mon -i a -c "$C" >> "$D/log/daemons.out" 2>&1     # daemonizes, writes run/mon.a.pid
  ceph-osd -i 0 --mkfs --osd-uuid "$UUID" -c "$C" > "$D/log/osd-mkfs.out" 2>&1 &
  local mkfs=$!
  timeout 60 ceph -c "$C" --connect-timeout 30 osd new "$UUID" 0 >/dev/null
  wait $mkfs || { cat "$D/log/osd-mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
  log "mon up, osd.0 created ($CEPH_STORE)"
  ceph-osd -i 0 -c "$C" >> "$D/log/daemons.out" 2>&1
  start_gateway
  radosgw-admin -c "$C" user create --uid=hourglass --display-name=hourglass \
    --access-key="$ACCESS" --secret-key="$SECRET" >/dev/null
}

# --- main ---------------------------------------------------------------------------------
case "${1:-start}" in
  start)
    if [ -f "$S3_DIR/env" ] && all_alive && probe; then
      log "already running ($(cat "$S3_DIR/server")) on $EP"; cat "$S3_DIR/env"; exit 0
    fi
    # never wipe a folder this script did not make (or an empty one)
    if [ -e "$S3_DIR" ] && [ ! -f "$S3_DIR/server" ] && [ -n "$(ls -A "$S3_DIR" 2>/dev/null)" ]; then
      die "S3_DIR=$S3_DIR exists, is not empty and was not made by this script"
    fi
    stop_all
    rm -rf "$S3_DIR"; mkdir -p "$S3_DIR/run" "$S3_DIR/log"
    port_free "$S3_PORT" || die "port $S3_PORT is in use"
    [ "$S3_SERVER" = ceph ] && { port_free "$CEPH_MON_PORT" || die "port $CEPH_MON_PORT is in use"; }
    echo "$S3_SERVER" > "$S3_DIR/server"
    # shellcheck disable=SC2154
    trap 'rc=$?; [ $rc = 0 ] || { log "start failed, stopping what was started"; stop_all; }' EXIT
    case "$S3_SERVER" in
      ceph) start_ceph ;;
      *) die "S3_SERVER must be ceph" ;;
    esac
    wait_ready 120
    print_env > "$S3_DIR/env"
    log "ready: $S3_SERVER on $EP (signed PUT/GET/DELETE ok)"
    trap - EXIT
    cat "$S3_DIR/env"
    ;;
  gateway-kill)
    p=$(cat "$S3_DIR/run/client.rgw.a.pid" 2>/dev/null || true)
    { [ -n "$p" ] && alive "$p" && ours "$p"; } || die "radosgw is not running"
    kill -9 "$p"
    for _ in $(seq 1 100); do alive "$p" || break; sleep 0.1; done
    rm -f "$S3_DIR/run/client.rgw.a.pid"
    log "killed radosgw (PID $p)"
    ;;
  gateway-start)
    start_gateway
    wait_ready 60
    ;;
  stop)
    stop_all
    rm -rf "$S3_DIR"/{mon,osd,rgw,data,env,monmap,keyring}
    ;;
  status)
    if [ -f "$S3_DIR/env" ] && all_alive && probe; then cat "$S3_DIR/env"; else echo "not running" >&2; exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|status|gateway-kill|gateway-start" >&2; exit 2 ;;
esac
