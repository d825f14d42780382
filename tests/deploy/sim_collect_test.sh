#!/usr/bin/env bash
# sim_collect_test.sh [COLLECT] — deploy/k8s/sim/collect.sh against a stand-in kubectl that
# serves a Job's pods and their logs, with real slice summaries from SACGATE_SIM (a built
# sacgate-sim: short runs against a closed port on 127.0.0.1, so every device fails fast).
# Checks: all slices merged; a retried slice takes the pod that succeeded; a missing slice makes
# collect.sh refuse (exit 1, naming it) unless --partial, which merges the others; a key seed in a
# log is redacted (sacgate-sim redacts it itself now, and the Job passes it as a file; one log here
# stands for an older simulator's, with the seed on its recorded command line).
# Exit 0 = pass, 1 = fail, 77 = skipped (no SACGATE_SIM, no /usr/bin/python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
collect=${1:-$here/../../deploy/k8s/sim/collect.sh}
sim=${SACGATE_SIM:-}
if [ -z "$sim" ] || [ ! -x "$sim" ]; then
  echo "SKIP: SACGATE_SIM is not set to a built sacgate-sim"
  exit 77
fi
if [ ! -x /usr/bin/python3 ]; then
  echo "SKIP: no /usr/bin/python3"
  exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fake=$tmp/k8s          # the stand-in cluster: job.status, pods (name|index|phase|created), logs/<pod>
mkdir -p "$fake/logs" "$tmp/bin"

# The stand-in kubectl: only the calls collect.sh makes.
cat >"$tmp/bin/kubectl" <<'EOF'
#!/usr/bin/env bash
set -eu
args="$*"
case $args in
  "-n sacgate get job sacgate-sim -o jsonpath="*) cat "$FAKE_K8S/job.status" ;;
  "-n sacgate get pods -l job-name=sacgate-sim -o jsonpath="*)
    case $args in *'batch\.kubernetes\.io/job-completion-index'*) ;; *) echo "bad jsonpath: $args" >&2; exit 1 ;; esac
    cat "$FAKE_K8S/pods" ;;
  "-n sacgate logs "*)
    pod=${args#-n sacgate logs }
    if [ -f "$FAKE_K8S/logs/$pod" ]; then cat "$FAKE_K8S/logs/$pod"; else echo "Error from server (NotFound): pods \"$pod\" not found" >&2; exit 1; fi ;;
  *) echo "stand-in kubectl: unexpected call: $args" >&2; exit 1 ;;
esac
EOF
chmod +x "$tmp/bin/kubectl"

# Real summaries of three slices of 6 devices (each run: ~0.1 s, every connect refused).
for i in 0 1 2; do
  "$sim" run --devices 6 --slice "$i/3" --prefix ctest --host 127.0.0.1 --port 1 --insecure --reconnect off \
    --duration 5 --key-seed "collect-test-seed-$i" --json - --quiet >"$tmp/run-$i.log" 2>&1 || {
    echo "FAIL: sacgate-sim run for slice $i failed:"; sed 's/^/    /' "$tmp/run-$i.log"; exit 1; }
  grep -q '^SACGATE-SIM-SUMMARY {' "$tmp/run-$i.log" || { echo "FAIL: no summary line from slice $i"; exit 1; }
done

failures=0
# check NAME EXPECTED-RC EXPECTED-TEXT [collect.sh args...]: a failure is counted in $failures;
# $ok says whether this one passed (for the checks of its output that follow).
check() {
  local name=$1 want_rc=$2 want_text=$3 rc=0
  ok=0
  shift 3
  rm -rf "$tmp/out"
  PATH=$tmp/bin:$PATH FAKE_K8S=$fake KUBECTL=kubectl SACGATE_SIM=$sim \
    "$collect" --out "$tmp/out" "$@" >"$tmp/$name.out" 2>&1 || rc=$?
  if [ "$rc" -ne "$want_rc" ] || ! grep -qF -- "$want_text" "$tmp/$name.out"; then
    echo "FAIL: $name: collect.sh exited $rc (want $want_rc), output (want '$want_text'):"
    sed 's/^/    /' "$tmp/$name.out"
    failures=$((failures + 1))
    return 0
  fi
  echo "ok: $name: $(grep -F -m1 -- "$want_text" "$tmp/$name.out")"
  ok=1
}
merged_slices() {   # merged_slices N: merged.json holds slices 0..N-1 of 3 devices of 6 (or the given ones)
  /usr/bin/python3 - "$tmp/out/merged.json" "$@" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
want = sorted(int(x) for x in sys.argv[2:])
got = sorted(s["index"] for s in m.get("slices", []))
if got != want:
    sys.exit(f"merged.json has slices {got}, want {want}")
if "collect-test-seed" in json.dumps(m):
    sys.exit("merged.json holds a key seed")
PY
}

# 1. every slice there; slice 1 was retried: its first pod failed without a summary.
echo "3/0/3/1" >"$fake/job.status"
cat >"$fake/pods" <<'EOF'
sacgate-sim-2-ccccc|2|Succeeded|2026-01-01T00:00:02Z
sacgate-sim-0-aaaaa|0|Succeeded|2026-01-01T00:00:00Z
sacgate-sim-1-bbbbb|1|Failed|2026-01-01T00:00:01Z
sacgate-sim-1-ddddd|1|Succeeded|2026-01-01T00:05:00Z
EOF
# Slice 0 as an older simulator logged it: --key-seed in clear in the summary's command line.
sed 's/--key-seed <redacted>/--key-seed collect-test-seed-0/' "$tmp/run-0.log" >"$fake/logs/sacgate-sim-0-aaaaa"
if ! grep -q -- '--key-seed collect-test-seed-0' "$fake/logs/sacgate-sim-0-aaaaa"; then
  echo "FAIL: the summary of slice 0 has no '--key-seed <redacted>' in its command line to stand in for an old one:"
  grep '^SACGATE-SIM-SUMMARY' "$tmp/run-0.log" | head -c 600 | sed 's/^/    /'
  failures=$((failures + 1))
fi
printf 'sacgate-sim: import failed: HTTP 503\n' >"$fake/logs/sacgate-sim-1-bbbbb"
cp "$tmp/run-1.log" "$fake/logs/sacgate-sim-1-ddddd"
cp "$tmp/run-2.log" "$fake/logs/sacgate-sim-2-ccccc"
check all-slices 0 "merged 3 of 3 slices"
if [ "$ok" -eq 1 ]; then
  if ! err=$(merged_slices 0 1 2 2>&1); then echo "FAIL: all-slices: $err"; failures=$((failures + 1)); fi
  for i in 0 1 2; do
    [ -s "$tmp/out/slice-$i.json" ] || { echo "FAIL: all-slices: no slice-$i.json"; failures=$((failures + 1)); }
  done
  if grep -rq "collect-test-seed" "$tmp/out"; then
    echo "FAIL: all-slices: a key seed is left in $(grep -rl collect-test-seed "$tmp/out" | head -n 1)"
    failures=$((failures + 1))
  fi
  [ -s "$tmp/out/merged.html" ] || { echo "FAIL: all-slices: no merged.html"; failures=$((failures + 1)); }
fi

# 2. slice 2's only pod failed: refuse, naming the slice; --partial merges 0 and 1.
echo "3/0/2/1" >"$fake/job.status"
sed -i 's/^sacgate-sim-2-ccccc|2|Succeeded/sacgate-sim-2-ccccc|2|Failed/' "$fake/pods"
printf 'level=warn comp=entrypoint event=nofile.low\nKilled\n' >"$fake/logs/sacgate-sim-2-ccccc"
check missing-slice 1 "slice 2: no summary (pods: sacgate-sim-2-ccccc (Failed))"
if [ -e "$tmp/out/merged.json" ]; then echo "FAIL: missing-slice: merged anyway"; failures=$((failures + 1)); fi
check partial 0 "merged 2 of 3 slices" --partial
if [ "$ok" -eq 1 ]; then
  if ! err=$(merged_slices 0 1 2>&1); then echo "FAIL: partial: $err"; failures=$((failures + 1)); fi
  grep -q "^slice 2:" "$tmp/out/MISSING" || { echo "FAIL: partial: slice 2 not in MISSING"; failures=$((failures + 1)); }
fi

# 3. still running: missing slices come with the hint to wait.
echo "3/1/2/0" >"$fake/job.status"
sed -i 's/^sacgate-sim-2-ccccc|2|Failed/sacgate-sim-2-ccccc|2|Running/' "$fake/pods"
check running 1 "wait --for=condition=complete job/sacgate-sim"

# 4. nothing to merge even with --partial.
: >"$fake/pods"
check no-pods 1 "no slice has a summary" --partial

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "ok: collect.sh merges, refuses and --partial-merges as documented"
