#!/usr/bin/env bash
# shard-restart.sh DIR NAME OUT — the shard-restart scenario's disruption (bench.py): SIGKILL store
# shard NAME of the local cluster in DIR, start it again at once and measure how long it takes
# until its /readyz answers 200 (database opened, every live session loaded by the writer, links
# bound). Writes {"killMs", "readyMs", "sessions"} to OUT: readyMs counts from the new process's
# start, sessions is the shard's count as /v1/cluster shows it once ready and heard by the router.
set -euo pipefail
dir=$1 name=$2 out=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cluster=$here/../deploy/local/cluster.sh
# shellcheck disable=SC1091
. "$dir/ports.env"
port=""
for h in $HEALTH; do [ "${h%%=*}" = "$name" ] && port=${h#*=}; done
[ -n "$port" ] || { echo "shard-restart.sh: no /readyz port for $name in $dir/ports.env" >&2; exit 2; }
ms() { date +%s%3N; }
t0=$(ms)
"$cluster" kill "$name" "$dir"
t1=$(ms)
"$cluster" start "$name" "$dir"
deadline=$(( $(ms) + 600000 ))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do
  [ "$(ms)" -lt $deadline ] || { echo "shard-restart.sh: $name not ready after 600 s" >&2; exit 1; }
  sleep 0.02
done
t2=$(ms)
# The shard's own figures appear in /v1/cluster once the router has heard the new process (a
# moment after its /readyz, longer under a sanitizer): until then its entry has no "sessions".
count() {
  curl -fsS -H "Authorization: Bearer $(cat "$dir/admin.token")" "http://127.0.0.1:$ADMIN_PORT/v1/cluster" |
    python3 -c 'import json,sys
s = [s for s in json.load(sys.stdin)["shards"] if s.get("name") == sys.argv[1] and "sessions" in s]
print(s[0]["sessions"]) if s else sys.exit(1)' "$name"
}
until sessions=$(count 2>/dev/null); do
  [ "$(ms)" -lt $deadline ] || { echo "shard-restart.sh: $name not in /v1/cluster after 600 s" >&2; exit 1; }
  sleep 0.05
done
printf '{"killMs": %d, "readyMs": %d, "sessions": %d}\n' $((t1 - t0)) $((t2 - t1)) "$sessions" >"$out"
cat "$out" >&2
