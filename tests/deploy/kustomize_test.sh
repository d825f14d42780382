#!/usr/bin/env bash
# kustomize_test.sh [DIR] — render the kustomize base DIR (default: deploy/k8s of this
# repository) with `kubectl kustomize` and check the result with check_k8s.py.
# kustomize_test.sh --sim [DIR] — the same for the simulator overlay DIR (default:
# deploy/k8s/sim) with check_k8s_sim.py, against the base DIR/.. (rendered too) and the Secret
# that DIR/README.md documents.
#
# Exit 0 = pass, 1 = fail (one "FAIL: ..." line per problem), 77 = skipped (no kubectl, or no
# /usr/bin/python3 with the yaml module: apt-get install kubernetes-client python3-yaml).
# Environment: KUBECTL (default: kubectl from PATH) — e.g. the kubectl 1.20 of Debian 12, whose
# embedded kustomize v2 the base must also work with; SACGATE_BIN — a built sacgate: also start
# every tier with the rendered configuration for 2 s (the ctest sets it to build/sacgate);
# SACGATE_SIM (--sim) — a built sacgate-sim: run the Job pod's command line, for its slices,
# through `sacgate-sim --dry-run` (the ctest sets it to build/sacgate-sim).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sim=
if [ "${1:-}" = --sim ]; then
  sim=1
  shift
fi
if [ -n "$sim" ]; then
  dir=${1:-$here/../../deploy/k8s/sim}
else
  dir=${1:-$here/../../deploy/k8s}
fi
kubectl=${KUBECTL:-kubectl}
python=/usr/bin/python3

if ! command -v "$kubectl" >/dev/null 2>&1; then
  echo "SKIP: $kubectl not found (apt-get install kubernetes-client)"
  exit 77
fi
if ! [ -x "$python" ] || ! "$python" -c 'import yaml' 2>/dev/null; then
  echo "SKIP: $python cannot import yaml (apt-get install python3-yaml)"
  exit 77
fi
if [ ! -f "$dir/kustomization.yaml" ]; then
  echo "FAIL: no kustomization.yaml in $dir"
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

version=$("$kubectl" version --client 2>/dev/null | head -n 1 || true)
echo "rendering $dir with $kubectl (${version:-unknown version})"
if ! "$kubectl" kustomize "$dir" >"$tmp/rendered.yaml" 2>"$tmp/kustomize.err"; then
  echo "FAIL: $kubectl kustomize $dir failed:"
  sed 's/^/    /' "$tmp/kustomize.err"
  exit 1
fi
# Warnings (kustomize v5 prints deprecations) are worth seeing, not failing on.
[ -s "$tmp/kustomize.err" ] && sed 's/^/kustomize: /' "$tmp/kustomize.err"

rc=0
if [ -z "$sim" ]; then
  "$python" "$here/check_k8s.py" "$tmp/rendered.yaml" || rc=$?
  exit "$rc"
fi

# The overlay is applied after the base: check it against the base it sits in.
args=()
if [ -f "$dir/../kustomization.yaml" ]; then
  if ! "$kubectl" kustomize "$dir/.." >"$tmp/base.yaml" 2>"$tmp/base.err"; then
    echo "FAIL: $kubectl kustomize $dir/.. (the base) failed:"
    sed 's/^/    /' "$tmp/base.err"
    exit 1
  fi
  args+=(--base "$tmp/base.yaml")
else
  echo "note: no base at $dir/..: Services, NetworkPolicies and image not cross-checked"
fi
if [ ! -f "$dir/README.md" ]; then
  echo "FAIL: no README.md in $dir (it documents the Secret sacgate-sim)"
  exit 1
fi
args+=(--readme "$dir/README.md")
"$python" "$here/check_k8s_sim.py" "${args[@]}" "$tmp/rendered.yaml" || rc=$?
exit "$rc"
