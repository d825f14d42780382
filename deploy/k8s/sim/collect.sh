#!/usr/bin/env bash
# collect.sh [--partial] [--out DIR] [--namespace NS] [--job NAME]
#
# After the Job sacgate-sim (deploy/k8s/sim) has completed: read each pod's log, keep its
# `SACGATE-SIM-SUMMARY {...}` line as DIR/slice-<index>.json (the whole log as
# DIR/logs/<pod>.log) and merge the slices with
#   sacgate-sim merge --json DIR/merged.json --html DIR/merged.html DIR/slice-*.json
# (histograms are merged, not averaged). DIR defaults to ./sacgate-sim-results.
#
# Every slice must have its summary: a pod that failed (or still runs) has none, and a merge
# without its slice would report a smaller fleet than the one that ran. Then this script lists
# them and exits 1 without merging; with --partial it merges the slices there are (and says
# which are missing). For each index it takes the pod that succeeded, else the newest pod that
# printed a summary (backoffLimit retries a failed slice in a new pod).
#
# Environment: KUBECTL (default kubectl), SACGATE_SIM (default: sacgate-sim from PATH; the image
# has it as /usr/local/bin/sacgate-sim, or build it: cmake --build build --target sacgate-sim).
# Exit: 0 merged, 1 a slice is missing (or nothing to merge), 2 usage or tool error.
set -euo pipefail

usage() { sed -n '2,/^# Exit:/p' "$0" | sed 's/^# \{0,1\}//'; }

partial=0 out=./sacgate-sim-results ns=sacgate job=sacgate-sim
while [ $# -gt 0 ]; do
  case $1 in
    --partial) partial=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --namespace|-n) ns=${2:?--namespace needs a name}; shift ;;
    --job) job=${2:?--job needs a name}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "collect.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

kubectl=${KUBECTL:-kubectl}
sim=${SACGATE_SIM:-sacgate-sim}
for tool in "$kubectl" "$sim"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "collect.sh: $tool not found (set KUBECTL / SACGATE_SIM)" >&2
    exit 2
  fi
done

if ! status=$("$kubectl" -n "$ns" get job "$job" \
      -o jsonpath='{.spec.completions}/{.status.active}/{.status.succeeded}/{.status.failed}'); then
  echo "collect.sh: cannot read Job $ns/$job (applied? already removed by ttlSecondsAfterFinished?)" >&2
  exit 2
fi
IFS=/ read -r slices active succeeded failed <<<"$status"
if ! [[ $slices =~ ^[0-9]+$ ]] || [ "$slices" -lt 1 ]; then
  echo "collect.sh: Job $ns/$job has no completions count ('$status'): not the Indexed Job of deploy/k8s/sim?" >&2
  exit 2
fi
echo "Job $ns/$job: $slices slices; pods active ${active:-0}, succeeded ${succeeded:-0}, failed ${failed:-0}"

# name|index|phase|created, oldest first
if ! pods=$("$kubectl" -n "$ns" get pods -l "job-name=$job" -o jsonpath='{range .items[*]}{.metadata.name}{"|"}{.metadata.annotations.batch\.kubernetes\.io/job-completion-index}{"|"}{.status.phase}{"|"}{.metadata.creationTimestamp}{"\n"}{end}'); then
  echo "collect.sh: cannot list the pods of Job $ns/$job" >&2
  exit 2
fi
pods=$(sort -t '|' -k4,4 <<<"$pods")

mkdir -p "$out/logs"
rm -f "$out"/slice-*.json "$out/merged.json" "$out/merged.html" "$out/MISSING"

# Indexed by completion index (plain arrays: bash 3.2 of macOS has no associative ones).
chosen=() chosen_phase=() tried=()
while IFS='|' read -r pod index phase _; do
  [ -n "$pod" ] || continue
  if ! [[ $index =~ ^[0-9]+$ ]] || [ "$index" -ge "$slices" ]; then
    echo "collect.sh: pod $pod has no valid completion index ('$index'); skipped" >&2
    continue
  fi
  tried[index]="${tried[$index]:-}${tried[$index]:+, }$pod ($phase)"
  # A succeeded pod is never replaced; otherwise the newer pod wins.
  [ "${chosen_phase[$index]:-}" = Succeeded ] && continue
  log=$out/logs/$pod.log
  if ! "$kubectl" -n "$ns" logs "$pod" >"$log" 2>"$log.err"; then
    echo "collect.sh: no log for pod $pod: $(head -c 300 "$log.err")" >&2
    rm -f "$log.err"
    continue
  fi
  rm -f "$log.err"
  # The pods pass the key seed as a file (--key-seed-file), and sacgate-sim shows secret flag
  # values as <redacted> in the command line it records; this catches the logs of older
  # simulators and of pods run another way, with --key-seed on the command line.
  sed -E 's/(--key-seed[ =])[^ "]+/\1<redacted>/g' "$log" >"$log.tmp" && mv "$log.tmp" "$log"
  line=$(grep '^SACGATE-SIM-SUMMARY {' "$log" | tail -n 1 || true)
  [ -n "$line" ] || continue
  printf '%s\n' "${line#SACGATE-SIM-SUMMARY }" >"$out/slice-$index.json"
  chosen[index]=$pod
  chosen_phase[index]=$phase
done <<<"$pods"

have=() missing=()
for ((i = 0; i < slices; i++)); do
  if [ -n "${chosen[$i]:-}" ]; then
    have+=("$out/slice-$i.json")
  else
    missing+=("$i")
    echo "slice $i: no summary (pods: ${tried[$i]:-none})" >>"$out/MISSING"
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  sed 's/^/collect.sh: /' "$out/MISSING" >&2
  if [ "${active:-0}" -gt 0 ]; then
    echo "collect.sh: the Job still runs ($active pods): wait for it with" >&2
    echo "    $kubectl -n $ns wait --for=condition=complete job/$job --timeout=2h" >&2
  fi
  if [ "$partial" -ne 1 ]; then
    echo "collect.sh: ${#missing[@]} of $slices slices have no summary (see kubectl -n $ns describe pod / logs);" \
         "not merging. --partial merges the ${#have[@]} there are." >&2
    exit 1
  fi
  if [ ${#have[@]} -eq 0 ]; then
    echo "collect.sh: no slice has a summary: nothing to merge" >&2
    exit 1
  fi
  echo "collect.sh: --partial: merging ${#have[@]} of $slices slices; missing: ${missing[*]} (listed in $out/MISSING)" >&2
fi

if ! "$sim" merge --json "$out/merged.json" --html "$out/merged.html" "${have[@]}"; then
  echo "collect.sh: sacgate-sim merge failed" >&2
  exit 2
fi
echo "merged ${#have[@]} of $slices slices: $out/merged.json $out/merged.html"
