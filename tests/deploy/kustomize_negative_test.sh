#!/usr/bin/env bash
# kustomize_negative_test.sh [DIR [SIMDIR]] — proves kustomize_test.sh can fail: breaks copies
# of the kustomize base DIR (default: deploy/k8s) in a temp dir, one way at a time, and expects
# kustomize_test.sh to exit non-zero with the matching message each time; then the same for the
# simulator overlay SIMDIR (default: DIR/sim; kustomize_test.sh --sim), copied into the copy of
# the base. SACGATE_BIN / SACGATE_SIM (built binaries) add the cases only they can detect.
# Exit 0 = every breakage detected, 1 = one was not, 77 = skipped (as kustomize_test.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(cd "${1:-$here/../../deploy/k8s}" && pwd)
simdir=$(cd "${2:-$dir/sim}" && pwd)
test=$here/kustomize_test.sh

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The unbroken base must pass first (or skip: then there is nothing to prove here).
rc=0
"$test" "$dir" >"$tmp/base.out" 2>&1 || rc=$?
if [ "$rc" -eq 77 ]; then cat "$tmp/base.out"; exit 77; fi
if [ "$rc" -ne 0 ]; then
  echo "FAIL: the unbroken base does not pass:"
  sed 's/^/    /' "$tmp/base.out"
  exit 1
fi
sim_bin=${SACGATE_SIM:-}
rc=0
SACGATE_SIM=$sim_bin "$test" --sim "$simdir" >"$tmp/sim.out" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FAIL: the unbroken simulator overlay does not pass:"
  sed 's/^/    /' "$tmp/sim.out"
  exit 1
fi

failures=0
# Start the tiers (SACGATE_BIN) only in the cases about configuration keys: the others are
# about the manifests, and each start costs 2 s.
bin=${SACGATE_BIN:-}
use_bin=
# Likewise run the simulator's --dry-run (SACGATE_SIM) only in the cases about its flags.
use_sim=
# case NAME EXPECTED-MESSAGE FILE OLD NEW: replace OLD (must occur exactly once) by NEW in a copy
# of FILE, run the test on the copy, expect failure and EXPECTED-MESSAGE in its output.
# A FILE under sim/ breaks the copy of the simulator overlay, and the test runs with --sim.
case_() {
  local name=$1 expect=$2 file=$3 old=$4 new=$5 work=$tmp/$1
  rm -rf "$work"
  cp -r "$dir" "$work"
  rm -rf "$work/sim"
  mkdir -p "$work/sim"
  cp -r "$simdir/." "$work/sim/"
  if ! /usr/bin/python3 - "$work/$file" "$old" "$new" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected exactly one {old!r}, found {text.count(old)}")
open(path, "w").write(text.replace(old, new))
PY
  then
    echo "FAIL: $name: could not break $file (the manifests changed; update this case)"
    failures=$((failures + 1))
    return
  fi
  local rc=0
  if [ "${file%%/*}" = sim ]; then
    SACGATE_SIM=$use_sim "$test" --sim "$work/sim" >"$work.out" 2>&1 || rc=$?
  else
    SACGATE_BIN=$use_bin "$test" "$work" >"$work.out" 2>&1 || rc=$?
  fi
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ]; then
    echo "FAIL: $name: kustomize_test.sh exited $rc on broken manifests"
    sed 's/^/    /' "$work.out"
    failures=$((failures + 1))
  elif ! grep -qF -- "$expect" "$work.out"; then
    echo "FAIL: $name: kustomize_test.sh failed, but without '$expect':"
    sed 's/^/    /' "$work.out"
    failures=$((failures + 1))
  else
    echo "ok: $name detected: $(grep -F -m1 -- "$expect" "$work.out")"
  fi
}

case_ shards-vs-replicas "it must list exactly 'store-0,store-1,store-2'" \
  store.yaml "  replicas: 2" "  replicas: 3"
case_ shard-missing "cluster.shards is 'store-0'" \
  sacgate.conf 'shards = "store-0,store-1"' 'shards = "store-0"'
case_ no-admin "missing Deployment admin" \
  kustomization.yaml "  - admin.yaml" ""
case_ no-volume-claim "no volumeClaimTemplate 'data'" \
  store.yaml "  volumeClaimTemplates:
    - metadata:
        name: data" "  volumeClaimTemplates:
    - metadata:
        name: scratch"
case_ store-not-headless "Service store is not headless" \
  store.yaml "  clusterIP: None" "  clusterIP: \"\""
case_ frontend-not-lb "Service frontend is type ClusterIP, not LoadBalancer" \
  frontend.yaml "  type: LoadBalancer" "  type: ClusterIP"
case_ no-wss-port "Service frontend has no port 443" \
  frontend.yaml "      port: 443" "      port: 4443"
case_ no-readiness "Deployment router container router has no readinessProbe" \
  router.yaml "          readinessProbe:" "          startupProbe:"
case_ no-image-tag "has no fixed tag" \
  kustomization.yaml '    newTag: "0.1.0"' '    newTag: latest'
case_ bad-zpl "is not valid ZPL" \
  sacgate.conf "    routers = " "   routers = "
case_ tokens-dir "admin.tokens '/etc/sacgate/tokens' must be a file" \
  sacgate.conf 'tokens = "/etc/sacgate/tokens/tokens"' 'tokens = "/etc/sacgate/tokens"'
case_ probe-port "livenessProbe uses port 9091, but health.port is 9090" \
  store.yaml "            - name: health
              containerPort: 9090" "            - name: health
              containerPort: 9091"
case_ name-env "env SACGATE_FRONTEND_NAME must come from fieldRef metadata.name" \
  frontend.yaml "            - name: SACGATE_FRONTEND_NAME" "            - name: SACGATE_FRONTEND_NAMES"
case_ rocksdb-log-on-data "SACGATE_STORE_LOG_DIR '/var/lib/sacgate/log' is not the mount of a size-limited emptyDir" \
  store.yaml "              value: /var/log/sacgate" "              value: /var/lib/sacgate/log"
case_ no-rocksdb-log-dir "SACGATE_STORE_LOG_DIR is not set" \
  store.yaml "            - name: SACGATE_STORE_LOG_DIR" "            - name: SACGATE_STORE_LOG_DIRS"
# CURVE between the tiers: the certificate in the configuration, the Secret in every tier.
case_ no-curve-mount "Deployment router does not mount the Secret sacgate-curve-router" \
  router.yaml "            - name: curve
              mountPath: /etc/sacgate/curve
              readOnly: true
" ""
case_ curve-mount-path "Secret sacgate-curve-store is mounted at '/etc/sacgate/certs'" \
  store.yaml "              mountPath: /etc/sacgate/curve
" "              mountPath: /etc/sacgate/certs
"
case_ curve-subpath "Secret sacgate-curve-admin is mounted with subPath" \
  admin.yaml "              mountPath: /etc/sacgate/curve
" "              mountPath: /etc/sacgate/curve/admin.cert
              subPath: admin.cert
"
case_ curve-unreadable "Secret sacgate-curve-router's files are owned by root" \
  router.yaml "        fsGroup: 10001" ""
case_ no-curve-cert "cluster.curve_cert is not set" \
  sacgate.conf '    curve_cert = "/etc/sacgate/curve/{role}.cert"
' ''
case_ no-curve-public "Deployment frontend does not mount the Secret sacgate-curve-public" \
  frontend.yaml "            - name: curve-public
              mountPath: /etc/sacgate/curve-public
              readOnly: true
" ""
case_ curve-insecure "cluster.insecure is 'true'" \
  sacgate.conf '    curve_cert = "/etc/sacgate/curve/{role}.cert"' '    curve_cert = "/etc/sacgate/curve/{role}.cert"
    insecure = true'
if [ -n "$bin" ] && [ -x "$bin" ]; then
  # Only the real binary knows every configuration key.
  use_bin=$bin
  case_ unknown-key "unknown configuration key 'router.threads'" \
    sacgate.conf '    bind = "tcp://*:9100"' '    bind = "tcp://*:9100"
    threads = 2'
  case_ bad-value "store.sync must be one of always|never" \
    sacgate.conf 'sync = "always"' 'sync = "sometimes"'
else
  echo "note: SACGATE_BIN not set: configuration keys not checked against the binary"
fi

# ---- the simulator overlay (deploy/k8s/sim) ----
use_sim=
case_ sim-completions "completions 10 != SLICES 20" \
  sim/job.yaml "  completions: 20" "  completions: 10"
case_ sim-parallelism "parallelism 5 != SLICES 20" \
  sim/job.yaml "  parallelism: 20" "  parallelism: 5"
case_ sim-not-indexed "completionMode is 'NonIndexed', not Indexed" \
  sim/job.yaml "  completionMode: Indexed" "  completionMode: NonIndexed"
case_ sim-slice-arg 'does not pass --slice "$JOB_COMPLETION_INDEX/$SLICES"' \
  sim/job.yaml '--slice "$JOB_COMPLETION_INDEX/$SLICES"' '--slice "0/$SLICES"'
case_ sim-seed-mount-key "mounts key 'seed' of Secret sacgate-sim, which has no such key" \
  sim/job.yaml "              - key: key-seed" "              - key: seed"
case_ sim-seed-not-mounted "key key-seed of Secret sacgate-sim is not mounted" \
  sim/job.yaml "              - key: key-seed
                path: key-seed
" ""
case_ sim-secret-mount-key "mounts key 'token' of Secret sacgate-sim, which has no such key" \
  sim/job.yaml "              - key: admin.token" "              - key: token"
case_ sim-secret-undocumented "mounts key 'admin.token' of Secret sacgate-sim, which has no such key" \
  sim/README.md "        --from-file=admin.token=dev/admin.token \\
" ""
case_ sim-no-sysctl "no pod sysctl net.ipv4.ip_local_port_range" \
  sim/job.yaml "          - name: net.ipv4.ip_local_port_range" "          - name: net.ipv4.tcp_syncookies"
case_ sim-writable-root "readOnlyRootFilesystem is not true" \
  sim/job.yaml "            readOnlyRootFilesystem: true" "            readOnlyRootFilesystem: false"
case_ sim-restart "restartPolicy 'OnFailure', not Never" \
  sim/job.yaml "      restartPolicy: Never" "      restartPolicy: OnFailure"
case_ sim-no-tag "has no fixed tag" \
  sim/kustomization.yaml '    newTag: "0.1.0"' '    newTag: latest'
case_ sim-other-image "is not the base's 'sacgate:0.1.0'" \
  sim/kustomization.yaml '    newTag: "0.1.0"' '    newTag: "0.2.0"'
case_ sim-wrong-host "does not name the frontend Service of the base" \
  sim/job.yaml "              value: frontend.sacgate.svc.cluster.local
            - name: SERVER_NAME" "              value: frontend.default.svc.cluster.local
            - name: SERVER_NAME"
# The key seed: only ever the mounted file, never a flag value, an env var or a log line.
case_ sim-seed-on-cmdline "the key seed is on the simulator's command line" \
  sim/job.yaml '--key-seed-file "$seed_file"' '--key-seed "$(cat "$seed_file")"'
case_ sim-no-seed-file "the simulator gets no --key-seed-file" \
  sim/job.yaml '--key-seed-file "$seed_file" ' ''
case_ sim-seed-file-elsewhere "--key-seed-file '/tmp/key-seed' is not the mounted key key-seed" \
  sim/job.yaml '--key-seed-file "$seed_file"' '--key-seed-file /tmp/key-seed'
case_ sim-seed-env "env KEY_SEED carries the key seed" \
  sim/job.yaml '            - name: SIM_CPUS' '            - name: KEY_SEED
              valueFrom:
                secretKeyRef:
                  name: sacgate-sim
                  key: key-seed
            - name: SIM_CPUS'
case_ sim-seed-envfrom "envFrom takes every key of Secret sacgate-sim into the environment" \
  sim/job.yaml '          env:
' '          envFrom:
            - secretRef:
                name: sacgate-sim
          env:
'
case_ sim-seed-exported "the key seed is in the simulator's environment (SEED" \
  sim/job.yaml '              seed_file=/etc/sacgate-sim/key-seed
' '              seed_file=/etc/sacgate-sim/key-seed
              export SEED="$(cat "$seed_file")"
'
case_ sim-seed-in-log "the key seed reaches the pod's log" \
  sim/job.yaml 'head -n 1 "$seed_file" | tr' 'head -n 1 "$seed_file" | tee /dev/stderr | tr'
case_ sim-exit-status "exits 0 when the simulator exits 3" \
  sim/job.yaml '--json - --quiet' '--json - --quiet | cat'
case_ sim-k8s-expansion "Kubernetes expands \$(NAME)" \
  sim/job.yaml '--devices "$DEVICES"' '--devices "$(DEVICES)"'
if [ -n "$sim_bin" ] && [ -x "$sim_bin" ]; then
  # Only the real simulator knows every flag and value.
  use_sim=$sim_bin
  case_ sim-unknown-flag "unknown flag '--no-such-flag'" \
    sim/job.yaml '            - name: EXTRA_ARGS
              value: ""' '            - name: EXTRA_ARGS
              value: "--no-such-flag 1"'
  case_ sim-bad-value "--qos: '7' is not a whole number from 0 to 1" \
    sim/job.yaml '            - name: QOS
              value: "1"' '            - name: QOS
              value: "7"'
  case_ sim-ports "ephemeral ports" \
    sim/job.yaml '              value: "1000000"' '              value: "2000000"'
  case_ sim-one-process "more than 18000 per worker process" \
    sim/job.yaml '            - name: PROCESSES
              value: "0"' '            - name: PROCESSES
              value: "1"'
  case_ sim-memory "requests.memory 256Mi is below" \
    sim/job.yaml "              memory: 1Gi" "              memory: 256Mi"
else
  echo "note: SACGATE_SIM not set: the simulator's flags not checked against the binary"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures breakage(s) not detected"
  exit 1
fi
echo "ok: every breakage detected"
