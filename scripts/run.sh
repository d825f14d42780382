#!/usr/bin/env bash
# run.sh — build sacgate and start it as one process (`sacgate all`) with its data in ./var.
# Extra arguments go to `sacgate all` (e.g. --mqtt-port 0 --admin-port 0 for free ports).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh"
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" --target sacgate
# MQTT over WebSocket listens on 443 by default, a privileged port: a normal user gets 8443
# instead unless they pick one (--ws-port).
args=()
if [ "$(id -u)" -ne 0 ] && [[ " $* " != *" --ws-port"* ]]; then
  args+=(--ws-port 8443)
fi
exec "$root/build/sacgate" all --data-dir "$root/var" "${args[@]}" "$@"
