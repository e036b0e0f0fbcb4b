#!/usr/bin/env bash
# ACME order throughput, enrollca beside Let's Encrypt's pebble (Debian package `pebble`), in
# one run, same machine, same load generator (target/release/enrollca-acme-load: a new account,
# an order for a fresh name, http-01 answered in-process, finalize, download; a flow counts only
# if the certificate names the identifier and certifies the CSR's key).
# pebble runs with PEBBLE_VA_NOSLEEP=1, no nonce rejection and no authorization reuse, and
# resolves names through pebble-challtestsrv (every name -> 127.0.0.1); enrollca resolves
# *.localhost to loopback itself. Everything listens on 127.0.0.1 only.
#
#   bash benches/acme_vs_pebble.sh [ORDERS] [CONCURRENCY...]     (default: 1000 orders, c=16)
#   ROUNDS=N ...  alternates N pebble and enrollca passes per concurrency (default 3) and ends
#                 with the median ratio of their orders/s.
set -euo pipefail
cd "$(dirname "$0")/.."
orders=${1:-1000}
shift || true
concurrencies=("${@:-16}")
rounds=${ROUNDS:-3}
command -v pebble >/dev/null || { echo "install the Debian package pebble" >&2; exit 1; }
# BIN=DIR runs binaries built elsewhere, e.g. another revision for an A/B comparison.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --workspace --bin enrollca --bin enrollca-acme-load
fi
bin=${BIN:-$PWD/target/release}

. benches/lib.sh

# pebble's TLS certificate, under a throwaway root (rustls refuses a self-signed leaf).
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tlsroot.key \
  -out tlsroot.pem -days 2 -subj "/CN=bench TLS root" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout pebble.key \
  -out pebble.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf
openssl x509 -req -in pebble.csr -CA tlsroot.pem -CAkey tlsroot.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out pebble.pem 2>/dev/null
cat >pebble.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "$work/pebble.pem", "privateKey": "$work/pebble.key",
  "httpPort": 5012, "tlsPort": 5013, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
pebble-challtestsrv -defaultIPv6 "" -dns01 127.0.0.1:8053 -http01 "" -https01 "" -tlsalpn01 "" \
  -management 127.0.0.1:8055 >challtestsrv.log 2>&1 </dev/null &
pids+=($!)
# pebble 2.4 can deadlock under concurrent load: MemoryStore.FindValidAuthorization takes the
# store's read lock while already holding it, so a writer waiting in between (AddOrder,
# AddAccount) blocks both for good (goroutine dump by SIGQUIT). No request here takes near a
# second, so 5 s without an answer counts as a failure; such a pass is reported, then run
# again against a fresh pebble, at most five times.
start_pebble() {
  [ -n "${pebble_pid:-}" ] && { kill "$pebble_pid"; wait "$pebble_pid" 2>/dev/null || true; }
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    pebble -config pebble.json -dnsserver 127.0.0.1:8053 >>pebble.log 2>&1 </dev/null &
  pids+=($!)
  pebble_pid=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null --cacert tlsroot.pem https://127.0.0.1:14000/dir 2>/dev/null && return
    sleep 0.1
  done
}
start_pebble

"$bin/enrollca" init --data "$work/data" >/dev/null
ENROLLCA_ACME_HTTP01_PORT=5012 ENROLLCA_LOG_LEVEL=warn ENROLLCA_LISTEN_HTTP=127.0.0.1:18091 \
  ENROLLCA_LISTEN_HTTPS=127.0.0.1:18444 ENROLLCA_LIMITS_CLIENT_RATE=0 \
  ENROLLCA_LIMITS_ACCOUNT_ORDER_RATE=0 "$bin/enrollca" serve --data "$work/data" >enrollca.log 2>&1 </dev/null &
pids+=($!)
enrollca_pid=$!

for _ in $(seq 100); do
  curl -fsS -o /dev/null --cacert tlsroot.pem https://127.0.0.1:14000/dir 2>/dev/null \
    && curl -fsS -o /dev/null http://127.0.0.1:18091/healthz 2>/dev/null && break
  sleep 0.1
done
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a server exited:" >&2; cat ./*.log >&2; exit 1; }
done
curl -fsS http://127.0.0.1:18091/roots.pem >enrollca-roots.pem

# The load generator's own CPU, which shares the two cores with the server it drives.
load() { /usr/bin/time -f "load generator: %U s user + %S s system CPU" "$bin/enrollca-acme-load" --timeout 5s "$@"; }
# Orders/s of a pass that completed with no failure (empty otherwise).
rate() { sed -n 's|.* = \([0-9.]*\)/s; 0 failed.*|\1|p' "$1"; }
summary=()
for c in "${concurrencies[@]}"; do
  ratios=()
  for round in $(seq "$rounds"); do
    # Each round against a fresh pebble: its in-memory store only grows, and a larger one
    # would slow it down for reasons that have nothing to do with this load.
    [ "$round" -gt 1 ] && start_pebble
    for attempt in 1 2 3 4 5; do
      load --directory https://127.0.0.1:14000/dir --ca-file tlsroot.pem --http01-port 5012 \
        --orders "$orders" --concurrency "$c" --server-pid "$pebble_pid" --label pebble 2>&1 \
        | tee pebble-pass.txt
      grep -q ' 0 failed' pebble-pass.txt && break
      echo "pebble: pass $attempt failed (deadlock?); running again against a fresh pebble"
      start_pebble
    done
    load --directory https://127.0.0.1:18444/acme/default/directory \
      --ca-file enrollca-roots.pem --http01-port 5012 --orders "$orders" --concurrency "$c" \
      --server-pid "$enrollca_pid" --label enrollca 2>&1 | tee enrollca-pass.txt
    p=$(rate pebble-pass.txt)
    e=$(rate enrollca-pass.txt)
    if [ -n "$p" ] && [ -n "$e" ]; then
      ratios+=("$(awk -v e="$e" -v p="$p" 'BEGIN { printf "%.2f", e / p }')")
      echo "c=$c round $round: enrollca $e/s, pebble $p/s: ${ratios[-1]}x"
    else
      echo "c=$c round $round: no ratio (a pass had failures)"
    fi
  done
  # The median ratio: this machine drifts too much for one pass to stand for a run.
  median=none
  if [ ${#ratios[@]} -gt 0 ]; then
    median=$(printf '%s\n' "${ratios[@]}" | sort -g \
      | awk '{ r[NR] = $1 } END { printf "%.2fx", NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }')
  fi
  summary+=("c=$c: enrollca/pebble orders/s, median of ${#ratios[@]} of $rounds rounds: $median (${ratios[*]})")
done
printf '%s\n' "${summary[@]}"
