#!/usr/bin/env bash
# kustomize_negative_test.sh [DIR] — proves kustomize_test.sh can fail: breaks copies of the
# kustomize base DIR (default: deploy/k8s) in a temp dir, one way at a time, and expects
# kustomize_test.sh to exit non-zero with the matching message each time.
# Exit 0 = every breakage detected, 1 = one was not, 77 = skipped (as kustomize_test.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(cd "${1:-$here/../../deploy/k8s}" && pwd)
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

failures=0
# Start the tiers (SACGATE_BIN) only in the cases about configuration keys: the others are
# about the manifests, and each start costs 2 s.
bin=${SACGATE_BIN:-}
use_bin=
# case NAME EXPECTED-MESSAGE FILE OLD NEW: replace OLD (must occur exactly once) by NEW in a copy
# of FILE, run the test on the copy, expect failure and EXPECTED-MESSAGE in its output.
case_() {
  local name=$1 expect=$2 file=$3 old=$4 new=$5 work=$tmp/$1
  rm -rf "$work"
  cp -r "$dir" "$work"
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
  SACGATE_BIN=$use_bin "$test" "$work" >"$work.out" 2>&1 || rc=$?
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
# CURVE between the tiers: the certificate in the configuration, the Secret in every tier.
case_ no-curve-mount "Deployment router does not mount the Secret sacgate-curve" \
  router.yaml "            - name: curve
              mountPath: /etc/sacgate/curve
              readOnly: true
" ""
case_ curve-mount-path "Secret sacgate-curve is mounted at '/etc/sacgate/certs'" \
  store.yaml "              mountPath: /etc/sacgate/curve" "              mountPath: /etc/sacgate/certs"
case_ curve-subpath "Secret sacgate-curve is mounted with subPath" \
  admin.yaml "              mountPath: /etc/sacgate/curve" "              mountPath: /etc/sacgate/curve/cluster.cert
              subPath: cluster.cert"
case_ curve-unreadable "Secret sacgate-curve's files are owned by root" \
  router.yaml "        fsGroup: 10001" ""
case_ no-curve-cert "cluster.curve_cert is not set" \
  sacgate.conf '    curve_cert = "/etc/sacgate/curve/cluster.cert"
' ''
case_ curve-insecure "cluster.insecure is 'true'" \
  sacgate.conf '    curve_cert = "/etc/sacgate/curve/cluster.cert"' '    curve_cert = "/etc/sacgate/curve/cluster.cert"
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

if [ "$failures" -ne 0 ]; then
  echo "$failures breakage(s) not detected"
  exit 1
fi
echo "ok: every breakage detected"
