#!/usr/bin/env bash
# cluster.sh — a local sacgate cluster of separate processes on loopback (tcp:// between tiers,
# or ipc:// with LINK=ipc): 2 store shards, 1 router, 2 frontends, 1 admin by default. Used by the
# multi-process tests.
#
#   cluster.sh up DIR          start everything; writes DIR/ports.env and the dev CA, server
#                              certificate, admin token and TLS ticket keys (as `sacgate init`
#                              does; every frontend shares DIR/ticket.keys)
#   cluster.sh down DIR        stop everything (SIGTERM, then SIGKILL after 10 s)
#   cluster.sh kill NAME DIR   SIGKILL one process (store-0, store-1, router-0, fe-0, fe-1, admin-0)
#   cluster.sh start NAME DIR  start that process again with the same arguments
#   cluster.sh status DIR      which processes run
#
# Environment: SACGATE_BIN (default: build/sacgate next to this repository), SHARDS (2),
# FRONTENDS (2), LOG_LEVEL (info), LINK (tcp: the links between tiers over TCP on 127.0.0.1, as
# between pods; ipc: over Unix sockets in DIR/links, cheaper when every tier runs on one host.
# CURVE secures the links either way).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SACGATE_BIN:-$here/../../build/sacgate}
shards=${SHARDS:-2}
frontends=${FRONTENDS:-2}
level=${LOG_LEVEL:-info}
link=${LINK:-tcp}

die() { echo "cluster.sh: $*" >&2; exit 1; }

# n free loopback ports at once, all different (see free_ports.py beside this script).
free_ports() {
  python3 "$here/free_ports.py" "$1"
}

start() {  # start NAME DIR: run the saved command line of NAME in the background
  local name=$1 dir=$2
  [ -f "$dir/$name.cmd" ] || die "no saved command for $name in $dir"
  # shellcheck disable=SC2046
  nohup $(cat "$dir/$name.cmd") >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

save_and_start() {  # NAME DIR ARGS...
  local name=$1 dir=$2
  shift 2
  echo "$bin $*" >"$dir/$name.cmd"
  start "$name" "$dir"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  local dir=$1
  [ -x "$bin" ] || die "sacgate binary not found at $bin (build first, or set SACGATE_BIN)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for p in "$dir"/*.pid; do
    [ -e "$p" ] || continue
    running "$p" && die "a cluster is already running in $dir (cluster.sh down $dir first)"
  done
  case "$link" in
    tcp) ;;
    ipc)
      # A Unix socket's path must fit sockaddr_un's 108 bytes ("ipc://" not counted): the longest
      # is DIR/links/store-NN or DIR/links/router-0 (15 more). Endpoints are words in the saved
      # command lines and ports.env, so DIR must not hold whitespace.
      [ $((${#dir} + 15)) -le 107 ] || die "LINK=ipc needs a shorter DIR: the sockets' paths ($dir/links/store-NN) would not fit a Unix socket address (107 bytes)"
      case "$dir" in *[[:space:]]*) die "LINK=ipc needs a DIR without whitespace (its sockets' paths are endpoints)" ;; esac
      mkdir -p "$dir/links"
      chmod 700 "$dir/links"   # only this user reaches the sockets at all (CURVE still checks every peer)
      ;;
    *) die "LINK must be tcp or ipc, not $link" ;;
  esac
  # a tier's endpoint: link_ep NAME PORT
  link_ep() { if [ "$link" = ipc ]; then echo "ipc://$dir/links/$1"; else echo "tcp://127.0.0.1:$2"; fi; }
  "$bin" init --data-dir "$dir" >/dev/null
  # one port per shard, the router, one per frontend, the admin; then a /readyz port for every
  # member but the admin (which serves /readyz on its own port); then a WebSocket port per frontend
  read -r -a ports <<<"$(free_ports $((2 * (shards + 1 + frontends) + 1 + frontends)))"
  local i=0 shard_list="" shard_ports="" shard_eps="" mqtt_ports="" ws_ports=""
  for ((s = 0; s < shards; s++)); do
    shard_list+="${shard_list:+,}store-$s=$(link_ep "store-$s" "${ports[i]}")"
    shard_ports+="${shard_ports:+ }${ports[i]}"
    shard_eps+="${shard_eps:+ }$(link_ep "store-$s" "${ports[i]}")"
    i=$((i + 1))
  done
  local router_port=${ports[i]}; i=$((i + 1))
  for ((f = 0; f < frontends; f++)); do
    mqtt_ports+="${mqtt_ports:+ }${ports[i]}"
    i=$((i + 1))
  done
  local admin_port=${ports[i]}; i=$((i + 1))
  # /readyz ports: store-0.., router-0, fe-0.. in that order (HEALTH in ports.env)
  local names=() health_list="" n
  for ((s = 0; s < shards; s++)); do names+=("store-$s"); done
  names+=(router-0)
  for ((f = 0; f < frontends; f++)); do names+=("fe-$f"); done
  declare -A health
  for n in "${names[@]}"; do
    health[$n]=${ports[i]}
    health_list+="${health_list:+ }$n=${ports[i]}"
    i=$((i + 1))
  done
  for ((f = 0; f < frontends; f++)); do
    ws_ports+="${ws_ports:+ }${ports[i]}"
    i=$((i + 1))
  done
  hp() { echo "--set health.bind=127.0.0.1 --health-port ${health[$1]}"; }
  local routers
  routers=$(link_ep router-0 "$router_port")
  # Every link between the processes is CURVE-encrypted; each tier loads only its own key pair of
  # those init wrote ({role} is the tier: DIR/curve/store.cert, router.cert, ...) and trusts the
  # public certificates in DIR/curve/public.
  local curve="--set cluster.curve_cert=$dir/curve/{role}.cert"
  {
    echo "MQTT_PORTS=\"$mqtt_ports\""
    echo "WS_PORTS=\"$ws_ports\""
    echo "ADMIN_PORT=$admin_port"
    echo "LINK=$link"
    echo "ROUTER_ENDPOINT=$routers"
    echo "SHARD_ENDPOINTS=\"$shard_eps\""
    if [ "$link" = tcp ]; then
      echo "ROUTER_PORT=$router_port"
      echo "SHARD_PORTS=\"$shard_ports\""
    fi
    echo "SHARDS=\"$shard_list\""
    echo "HEALTH=\"$health_list\""
  } >"$dir/ports.env"

  local s=0
  for ep in $shard_eps; do
    mkdir -p "$dir/store-$s"
    save_and_start "store-$s" "$dir" store $curve --name "store-$s" --bind "$ep" \
      --data-dir "$dir/store-$s" --shards "$shard_list" --log-level "$level" $(hp "store-$s")
    s=$((s + 1))
  done
  save_and_start router-0 "$dir" router $curve --name router-0 --bind "$routers" \
    --shards "$shard_list" --log-level "$level" $(hp router-0)
  local f=0 ws
  read -r -a ws <<<"$ws_ports"
  for p in $mqtt_ports; do
    save_and_start "fe-$f" "$dir" frontend $curve --name "fe-$f" --bind 127.0.0.1 --mqtt-port "$p" --ws-port "${ws[f]}" \
      --cert "$dir/server.crt" --key "$dir/server.key" --set "frontend.ticket_keys=$dir/ticket.keys" \
      --routers "$routers" --log-level "$level" $(hp "fe-$f")
    f=$((f + 1))
  done
  save_and_start admin-0 "$dir" admin $curve --bind 127.0.0.1 --admin-port "$admin_port" \
    --tokens "$dir/tokens" --routers "$routers" --log-level "$level"

  # Ready when the admin says every shard is reachable, every member's /readyz answers 200 (a
  # frontend: its router answers) and every frontend accepts TCP.
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { status "$dir" >&2; die "cluster in $dir did not become ready in 30 s (see $dir/*.log)"; }
    sleep 0.2
  done
  for n in "${names[@]}"; do
    until curl -fsS "http://127.0.0.1:${health[$n]}/readyz" >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || die "$n (/readyz on port ${health[$n]}) did not become ready in 30 s (see $dir/$n.log)"
      sleep 0.2
    done
  done
  for p in $mqtt_ports $ws_ports; do
    until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || die "frontend on port $p did not listen in time"
      sleep 0.2
    done
  done
  echo "cluster up in $dir ($link links): MQTT ports $mqtt_ports, WebSocket ports $ws_ports, admin http://127.0.0.1:$admin_port (token $dir/admin.token)"
}

down() {
  local dir=$1 pids=()
  for p in "$dir"/*.pid; do
    [ -e "$p" ] || continue
    running "$p" && pids+=("$(cat "$p")")
  done
  [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
      sleep 0.1
    done
  done
  rm -f "$dir"/*.pid
}

status() {
  local dir=$1
  for p in "$dir"/*.pid; do
    [ -e "$p" ] || continue
    local name
    name=$(basename "$p" .pid)
    if running "$p"; then echo "$name running pid $(cat "$p")"; else echo "$name stopped"; fi
  done
}

case "${1:-}" in
  up) [ $# -eq 2 ] || die "usage: cluster.sh up DIR"; up "$2" ;;
  down) [ $# -eq 2 ] || die "usage: cluster.sh down DIR"; down "$2" ;;
  kill)
    [ $# -eq 3 ] || die "usage: cluster.sh kill NAME DIR"
    running "$3/$2.pid" || die "$2 is not running"
    kill -KILL "$(cat "$3/$2.pid")"
    while kill -0 "$(cat "$3/$2.pid")" 2>/dev/null; do sleep 0.05; done
    rm -f "$3/$2.pid" ;;
  start) [ $# -eq 3 ] || die "usage: cluster.sh start NAME DIR"; start "$2" "$3" ;;
  status) [ $# -eq 2 ] || die "usage: cluster.sh status DIR"; status "$2" ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
