#!/usr/bin/env bash
# quick.sh — first figures (not the benchmark suite): against a local multi-process cluster,
# measure connect-to-CONNACK latency, QoS 1 telemetry throughput for 1 and 20 devices, and the
# frontend's resident memory per idle TLS session; then the same client runs against Mosquitto
# (TLS, no persistence) for a ratio. Everything runs on loopback and stops by itself.
#   bench/quick.sh [IDLE_SESSIONS=3000]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/build/sacgate
load=$root/build/bench/sg_load
idle=${1:-3000}
dir=$(mktemp -d /tmp/sg-quick.XXXXXX)
export SACGATE_BIN=$bin LOG_LEVEL=warn
# measure the gateway, not the per-device rate limit (default 100 msg/s)
export SACGATE_FRONTEND_TELEMETRY_RATE=65535 SACGATE_FRONTEND_TELEMETRY_BURST=65535
cleanup() {
  "$root/deploy/local/cluster.sh" down "$dir" >/dev/null 2>&1 || true
  [ -n "${mpid:-}" ] && kill "$mpid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
"$root/deploy/local/cluster.sh" up "$dir" >/dev/null
# shellcheck disable=SC1091
. "$dir/ports.env"
read -r -a mqtt <<<"$MQTT_PORTS"
token=$(cat "$dir/admin.token")
key=$(head -c 32 /dev/urandom | base64)

echo "creating $idle devices..."
/usr/bin/python3 - "$ADMIN_PORT" "$token" "$key" "$idle" "$dir/devices" <<'PY'
import http.client, json, sys
port, token, key, n, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
c = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"auth": {"type": "sas", "primaryKey": key, "secondaryKey": key}})
with open(out, "w") as f:
    for i in range(n):
        d = "load-%05d" % i
        c.request("PUT", "/v1/devices/" + d, body, {"Authorization": "Bearer " + token})
        r = c.getresponse(); r.read()
        assert r.status in (200, 201), r.status
        f.write("%s %s\n" % (d, key))
PY
head -20 "$dir/devices" >"$dir/devices20"
head -1 "$dir/devices" >"$dir/devices1"

echo "== sacgate (cluster: 2 shards, sync=always, frontend fe-0 on port ${mqtt[0]})"
"$load" --port "${mqtt[0]}" --cafile "$dir/ca.crt" --devices "$dir/devices1" --connections 1 --messages 20000 --window 10
"$load" --port "${mqtt[0]}" --cafile "$dir/ca.crt" --devices "$dir/devices20" --connections 20 --messages 2000 --window 10

fe_pid=$(cat "$dir/fe-0.pid")
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss "$fe_pid")
"$load" --mode idle --port "${mqtt[0]}" --cafile "$dir/ca.crt" --devices "$dir/devices" --connections "$idle" \
  --rate 1500 --hold 14 >"$dir/idle.out" &
lpid=$!
sleep 4
for _ in $(seq 1 60); do
  grep -q "connections:" "$dir/idle.out" 2>/dev/null && break
  conns=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^sacgate_frontend_connections\{frontend="fe-0"\}/ {print $2}')
  [ "${conns:-0}" -ge "$idle" ] && break
  sleep 1
done
sleep 7   # past the frontend's periodic heap trim after a burst of handshakes
after=$(rss "$fe_pid")
wait $lpid || true
cat "$dir/idle.out"
echo "frontend RSS: $before KiB before, $after KiB with $idle idle TLS sessions = $(( (after - before) * 1024 / idle )) bytes per session"

echo "== mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') (TLS, QoS 1, no persistence), same client"
mport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/mosquitto.conf" <<CONF
listener $mport 127.0.0.1
cafile $dir/ca.crt
certfile $dir/server.crt
keyfile $dir/server.key
allow_anonymous true
user $(id -un)
max_inflight_messages 20
max_connections -1
persistence false
log_type none
CONF
mosquitto -c "$dir/mosquitto.conf" >/dev/null 2>&1 &
mpid=$!
sleep 1
sed 's/ .*/ -/' "$dir/devices" >"$dir/mdevices"
head -1 "$dir/mdevices" >"$dir/mdevices1"
head -20 "$dir/mdevices" >"$dir/mdevices20"
"$load" --plain-topic --port "$mport" --cafile "$dir/ca.crt" --devices "$dir/mdevices1" --connections 1 --messages 20000 --window 10
"$load" --plain-topic --port "$mport" --cafile "$dir/ca.crt" --devices "$dir/mdevices20" --connections 20 --messages 2000 --window 10
mbefore=$(rss "$mpid")
"$load" --plain-topic --mode idle --port "$mport" --cafile "$dir/ca.crt" --devices "$dir/mdevices" --connections "$idle" \
  --rate 1500 --hold 6 >"$dir/midle.out" &
lpid=$!
sleep 4
for _ in $(seq 1 30); do grep -q "connections:" "$dir/midle.out" && break; [ "$(ls /proc/$mpid/fd | wc -l)" -gt "$idle" ] && break; sleep 1; done
sleep 2
mafter=$(rss "$mpid")
wait $lpid || true
cat "$dir/midle.out"
echo "mosquitto RSS: $mbefore KiB before, $mafter KiB with $idle idle TLS sessions = $(( (mafter - mbefore) * 1024 / idle )) bytes per session"
