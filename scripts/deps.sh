#!/usr/bin/env bash
# deps.sh — install the Debian 12 packages sacgate needs to build, run and test (only the
# missing ones; uses sudo when not root). Used by scripts/run.sh, tests/run.sh and .ci/run.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libczmq-dev libzmq3-dev librocksdb-dev libmicrohttpd-dev libssl-dev libjansson-dev libxxhash-dev libwslay-dev
  libcurl4-openssl-dev
  openssl ca-certificates curl procps iproute2 python3 python3-paho-mqtt python3-yaml python3-jsonschema python3-zmq mosquitto mosquitto-clients gnutls-bin chromium
)
# kubectl renders the Kubernetes manifests in the tests; Debian ships it as kubernetes-client.
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
# Node runs the Azure IoT device SDK in the integration tests (its packages come from npm).
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
