#!/usr/bin/env bash
# What the MDM asks, at fleet scale: a store seeded with COUNT certificates (REVOKED of them
# revoked) through Ca::issue, then, against the running server on the same 2 cores:
# POST /api/v1/validate and OCSP (no nonce) throughput and latency (enrollca-api-load; only
# `good` answers count), the time to sign the CRL listing every revocation (the first
# request after start, cache cold), and the server's RSS. Two access patterns:
#   - repeat: 1000 devices asked about again and again (devices that check in often), served
#     from the in-memory certificate states after the first ask;
#   - first contact: REQUESTS distinct devices, each asked about once, so every answer reads
#     the store (the worst case: a fleet's first connections after a restart).
#
#   bash benches/mdm_scale.sh [COUNT] [REVOKED] [REQUESTS]   (default: 1000000 100000 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}
revoked=${2:-100000}
requests=${3:-200000}
# BIN=DIR runs binaries built elsewhere, e.g. another revision for an A/B comparison.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --workspace --bin enrollca --bin enrollca-seed --bin enrollca-api-load
fi
bin=${BIN:-$PWD/target/release}

. benches/lib.sh

"$bin/enrollca" init --data "$work/data" >/dev/null
echo "seeding $count certificates, $revoked revoked"
/usr/bin/time -f "seeding: %e s wall, %M KiB max RSS" \
  "$bin/enrollca-seed" --data "$work/data" --count "$count" --revoked "$revoked" \
  --sample-count $((2 * requests)) --samples "$work/samples.pem"
# Disjoint first-contact sets for validate and OCSP (the one must not warm the other), and
# the repeat set, each with the issuer beside it.
awk -v n="$requests" -v dir="$work" '
  { print > (dir "/" (c < n ? "fleet-validate" : "fleet-ocsp") ".pem") }
  /END CERTIFICATE/ { c++ }' "$work/samples.pem"
awk '{ print } /END CERTIFICATE/ && ++n == 1000 { exit }' "$work/samples.pem" >"$work/repeat-validate.pem"
cp "$work/repeat-validate.pem" "$work/repeat-ocsp.pem"
for f in fleet-validate fleet-ocsp repeat-validate repeat-ocsp; do
  cp "$work/samples.issuer.pem" "$work/$f.issuer.pem"
done
du -sh "$work/data/db" | sed 's/^/store on disk: /'

# The API on plain HTTP (a loopback-only opt-in): the figures measure the store and the
# caches, as they always have, not TLS.
ENROLLCA_LOG_LEVEL=warn ENROLLCA_LISTEN_HTTP=127.0.0.1:18093 ENROLLCA_LISTEN_HTTPS=127.0.0.1:18446 \
  ENROLLCA_LISTEN_API_ON_HTTP=true "$bin/enrollca" serve --data "$work/data" >"$work/server.log" 2>&1 </dev/null &
pid=$!
pids+=("$pid")
for _ in $(seq 300); do
  curl -fsS -o /dev/null http://127.0.0.1:18093/healthz 2>/dev/null && break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
token=$(cat "$work/data/admin-token")
echo "server RSS after start: $(grep VmRSS /proc/$pid/status | awk '{print $2, $3}')"

issuer=$(curl -fsS -H "authorization: Bearer $token" http://127.0.0.1:18093/api/v1/issuers \
  | python3 -c 'import json,sys; print(next(i["id"] for i in json.load(sys.stdin) if i["family"]=="ecdsa" and i["state"]=="active"))')
curl -fsS -o "$work/ecdsa.crl" -w "CRL of issuer $issuer: %{time_total} s to sign and serve, %{size_download} bytes\n" \
  "http://127.0.0.1:18093/crl/$issuer.crl"
echo "CRL entries: $(openssl crl -inform DER -in "$work/ecdsa.crl" -noout -text | grep -c 'Serial Number')"
curl -fsS -o /dev/null -w "CRL again (cached): %{time_total} s\n" "http://127.0.0.1:18093/crl/$issuer.crl"

for set in fleet repeat; do
  case $set in
    fleet) echo "first contact: $requests distinct devices, each asked about once" ;;
    repeat) echo "repeat: 1000 devices, $requests requests" ;;
  esac
  for mode in validate ocsp; do
    ENROLLCA_TOKEN=$token "$bin/enrollca-api-load" --url http://127.0.0.1:18093 --mode "$mode" \
      --certs "$work/$set-$mode.pem" --requests "$requests" --concurrency 16 --server-pid "$pid"
  done
done
echo "server RSS after the runs: $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | awk '{printf "%s %s %s; ", $1, $2, $3}')"
