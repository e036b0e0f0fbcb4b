#!/usr/bin/env bash
# Device enrolments per second: complete ACME device-attest-01 flows (a new account, a
# permanent-identifier order for a registered device, a synthetic Apple-style attestation of
# a fresh P-256 device key signed by a P-384 intermediate, finalize, download) by
# target/release/enrollca-acme-load against enrollca on the same 2 cores, load generator
# included. A flow counts only if the certificate certifies the device key.
# The attestation CA is made with openssl; the server trusts its root through
# acme.attestation_roots and knows the devices through a bulk import (inventory on).
#
#   bash benches/device_enrolment.sh [ENROLMENTS] [CONCURRENCY...]   (default: 2000, c=16)
#   PERF=1 ...  also records the server with perf and splits its CPU by cost: JWS verify,
#               attestation chain verify, CSR verify, signing, store, TLS, HTTP, runtime
#               (benches/cpu_split.py).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
count=${1:-2000}
shift || true
concurrencies=("${@:-16}")
# BIN=DIR runs binaries built elsewhere, e.g. another revision for an A/B comparison.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --workspace --bin enrollca --bin enrollca-acme-load
fi
bin=${BIN:-$PWD/target/release}

. benches/lib.sh
cd "$work"

# The attestation CA, laid out like Apple's: P-384 root and intermediate.
attestation_ca att

"$bin/enrollca" init --data "$work/data" >/dev/null
sed -i "s|^attestation_roots = \[\]|attestation_roots = [\"$work/att/root.pem\"]|" data/config.toml
start_enrollca 18092 18445

token=$(cat data/admin-token)
register_devices "$count" https://127.0.0.1:18445 "$token" --cacert "$work/data/ca/roots.pem"

for c in "${concurrencies[@]}"; do
  [ -n "${PERF:-}" ] && { perf record -F 499 --call-graph dwarf,32768 -p "$enrollca_pid" -o perf.data 2>/dev/null & perf_pid=$!; sleep 0.5; }
  /usr/bin/time -f "load generator: %U s user + %S s system CPU" \
    "$bin/enrollca-acme-load" --directory https://127.0.0.1:18445/acme/device/directory \
    --ca-file roots.pem --attestation-ca att --orders "$count" --concurrency "$c" \
    --server-pid "$enrollca_pid" --label enrollca-device | tee pass.txt
  if [ -n "${PERF:-}" ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    # The split of this pass's server CPU (perf's sampling inflates it a little).
    ms=$(sed -n 's|.*server CPU \([0-9.]*\) ms/.*|\1|p' pass.txt)
    echo "server CPU by cost (share of samples, ms per enrolment):"
    perf script -i perf.data -F comm,ip,sym 2>/dev/null | python3 "$repo/benches/cpu_split.py" $ms
  fi
done
