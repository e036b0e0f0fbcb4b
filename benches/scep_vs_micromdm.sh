#!/usr/bin/env bash
# SCEP enrolment throughput, enrollca beside micromdm's scepserver (Debian package `scep`), in
# one run, same machine, same RSA-2048 CA (micromdm's CA imported into enrollca), same load
# generator (target/release/enrollca-scep-load: distinct PKCSReqs, verified replies only).
# scepserver binds all interfaces, so everything runs in a private network namespace.
#
#   sudo bash benches/scep_vs_micromdm.sh [REQUESTS]      (needs root for `ip netns`)
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-1000}
command -v scepserver >/dev/null || { echo "install the Debian package scep" >&2; exit 1; }
# BIN=DIR runs binaries built elsewhere, e.g. another revision for an A/B comparison.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --workspace --bin enrollca --bin enrollca-scep-load
fi
bin=${BIN:-$PWD/target/release}

. benches/lib.sh
ns=enrollca-bench-$$
at_exit ip netns del "$ns"
ip netns add "$ns"
ip -n "$ns" link set lo up
inns() { ip netns exec "$ns" "$@"; }

# One RSA-2048 CA for both: made by micromdm, imported by enrollca as root and SCEP issuer.
(cd "$work" && scepserver ca -init -depot depot -keySize 2048 >/dev/null)
# micromdm PEM-encrypts its key with an empty password; hand enrollca the plain key.
openssl pkey -in "$work/depot/ca.key" -passin pass: -out "$work/ca-plain.key"
"$bin/enrollca" init --data "$work/data" --root-cert "$work/depot/ca.pem" --root-key "$work/ca-plain.key" \
  --rsa-issuer-cert "$work/depot/ca.pem" --rsa-issuer-key "$work/ca-plain.key" >/dev/null

(cd "$work" && exec ip netns exec "$ns" scepserver -depot depot -port 18080 -challenge bench >"$work/micromdm.log" 2>&1) &
pids+=($!)
ENROLLCA_SCEP_CHALLENGE=bench ENROLLCA_LOG_LEVEL=warn ENROLLCA_LISTEN_HTTP=127.0.0.1:18081 \
  ENROLLCA_LISTEN_HTTPS=127.0.0.1:18443 ENROLLCA_LIMITS_CLIENT_RATE=0 ENROLLCA_LIMITS_CLIENT_CONCURRENCY=0 \
  ip netns exec "$ns" "$bin/enrollca" serve --data "$work/data" >"$work/enrollca.log" 2>&1 &
pids+=($!)
for port in 18080 18081; do
  for _ in $(seq 100); do inns curl -fsS -o /dev/null "http://127.0.0.1:$port/scep?operation=GetCACaps" && break; sleep 0.1; done
done
# The processes that serve (ip netns exec replaces itself with the server).
micromdm_pid=$(pgrep -n -x scepserver)
enrollca_pid=${pids[1]}

echo "openssl speed rsa2048 (one core): $(openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048/ {printf "%.0f sign/s = %.3f ms per private-key op", $6, 1000/$6}')"
for c in 1 8; do
  inns "$bin/enrollca-scep-load" --url http://127.0.0.1:18080/scep --challenge bench --requests "$requests" \
    --concurrency "$c" --server-pid "$micromdm_pid" --label micromdm-scepserver
  inns "$bin/enrollca-scep-load" --url http://127.0.0.1:18081/scep --challenge bench --requests "$requests" \
    --concurrency "$c" --server-pid "$enrollca_pid" --label enrollca
done
