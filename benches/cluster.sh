#!/usr/bin/env bash
# Several nodes on PostgreSQL against one node on sled, side by side in one run on the same
# cores: device-attest-01 enrolments/s (enrollca-acme-load: whole flows, as
# device_enrolment.sh) and POST /api/v1/validate answers/s (enrollca-api-load), for
#   sled      one node, the embedded store;
#   pg        one node on a private PostgreSQL cluster (initdb here, fsync and
#             synchronous_commit on, as a deployment runs it);
#   pg x2     two nodes on that database, the load split between them.
# Everything shares the machine's cores, so each pass also reports CPU per enrolment: the
# nodes' (from /proc) and PostgreSQL's (the postmaster and every backend, reaped ones
# included).
#
#   bash benches/cluster.sh [ENROLMENTS] [CONCURRENCY] [VALIDATIONS]   (default: 1000 16 20000)
#
# PG_STATEMENTS=1 also prints, after the one-node PostgreSQL pass, the statements it ran
# (pg_stat_statements): calls per enrolment is what to cut. PG_EXTRA adds server options
# (PG_EXTRA='-c fsync=off' shows what the commits' flushes cost).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000}
conc=${2:-16}
validations=${3:-20000}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --workspace --bin enrollca --bin enrollca-acme-load \
    --bin enrollca-api-load
fi
bin=${BIN:-$PWD/target/release}

. benches/lib.sh
cd "$work"

# The attestation CA the nodes trust.
attestation_ca att

start_postgres 15432 ${PG_STATEMENTS:+-c shared_preload_libraries=pg_stat_statements} ${PG_EXTRA:-}

port=18100
start_node() { # DATA ENV... → sets `node` to "PID HTTP HTTPS" (not in a subshell: `pids` and
  # `port` must change here)
  local data=$1; shift
  local http=$((port++)) https=$((port++))
  env "$@" ENROLLCA_LOG_LEVEL=warn ENROLLCA_LISTEN_HTTP=127.0.0.1:$http \
    ENROLLCA_LISTEN_HTTPS=127.0.0.1:$https ENROLLCA_LISTEN_API_ON_HTTP=true \
    ENROLLCA_LIMITS_CLIENT_RATE=0 ENROLLCA_LIMITS_ACCOUNT_ORDER_RATE=0 \
    "$bin/enrollca" serve --data "$data" >>"$work/nodes.log" 2>&1 </dev/null &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http/healthz" 2>/dev/null && break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null || { cat "$work/nodes.log" >&2; exit 1; }
  node="$pid $http $https"
}

# Certificates for the validation pass, issued through the API: PEM, issuer beside it.
validation_set() { # HTTP TOKEN FILE
  : >"$3"
  for i in $(seq 200); do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
      -subj "/CN=validate-$i" 2>/dev/null |
      python3 -c 'import json,sys; print(json.dumps({"csr": sys.stdin.read(), "issuer": "ecdsa"}))' |
      curl -fsS -H "authorization: Bearer $2" -H 'content-type: application/json' --data @- \
        "http://127.0.0.1:$1/api/v1/certificates" |
      python3 -c 'import json,sys; b=json.load(sys.stdin); c=b["chain_pem"].split("-----END CERTIFICATE-----")
print(c[0] + "-----END CERTIFICATE-----")
open(sys.argv[1], "w").write(c[1].strip() + "\n-----END CERTIFICATE-----\n")' "${3%.pem}.issuer.pem" >>"$3"
  done
}

pass() { # LABEL PG?   (the nodes: the global `nodes`, each "PID HTTP HTTPS")
  local label=$1 pg=$2
  local n=${#nodes[@]}
  local per=$((count / n)) pgc0=0 t0 t1 ncpu0=0 ncpu1=0 i=0 failed=0 pid http https
  local loads=()
  # Untimed first, a fifth of the run: every connection to PostgreSQL opened (a new one
  # costs its backend milliseconds of CPU once, which a server up for a while has paid) and
  # every cache warm, for sled as well.
  for node in "${nodes[@]}"; do
    read -r pid http https <<<"$node"
    "$bin/enrollca-acme-load" --directory "https://127.0.0.1:$https/acme/device/directory" \
      --ca-file roots.pem --attestation-ca att --orders $((per / 5)) --concurrency $((conc / n)) \
      --label "$label warm-up" >/dev/null 2>&1 &
    loads+=($!)
  done
  for l in "${loads[@]}"; do wait "$l" || { echo "$label: a warm-up load failed"; exit 1; }; done
  loads=()
  if [ "$pg" = 1 ] && [ -n "${PG_STATEMENTS:-}" ]; then
    psql_bench -qc "SELECT pg_stat_statements_reset()" >/dev/null
  fi
  [ "$pg" = 1 ] && pgc0=$(pg_cpu)
  for node in "${nodes[@]}"; do read -r pid _ <<<"$node"; ncpu0=$(echo "$ncpu0 + $(cpu "$pid")" | bc); done
  t0=$(date +%s.%N)
  for node in "${nodes[@]}"; do
    read -r pid http https <<<"$node"
    "$bin/enrollca-acme-load" --directory "https://127.0.0.1:$https/acme/device/directory" \
      --ca-file roots.pem --attestation-ca att --orders "$per" --concurrency $((conc / n)) \
      --label "$label node $i" >"$label-$i.txt" 2>&1 &
    loads+=($!)
    i=$((i + 1))
  done
  for l in "${loads[@]}"; do wait "$l" || failed=1; done
  t1=$(date +%s.%N)
  for node in "${nodes[@]}"; do read -r pid _ <<<"$node"; ncpu1=$(echo "$ncpu1 + $(cpu "$pid")" | bc); done
  cat "$label"-[0-9].txt
  [ "$failed" = 0 ] || { echo "$label: a load generator failed"; exit 1; }
  local secs rate node_ms pg_ms=0
  secs=$(echo "$t1 - $t0" | bc)
  rate=$(echo "scale=1; $per * $n / $secs" | bc)
  node_ms=$(echo "scale=2; ($ncpu1 - $ncpu0) * 1000 / ($per * $n)" | bc)
  [ "$pg" = 1 ] && pg_ms=$(echo "scale=2; ($(pg_cpu) - $pgc0) * 1000 / ($per * $n)" | bc)
  echo "RESULT $label: $((per * n)) enrolments in ${secs}s = $rate/s; CPU per enrolment: enrollca $node_ms ms + postgres $pg_ms ms"
}

validate_pass() { # LABEL PG? HTTP...
  local label=$1 pg=$2; shift 2
  local pgc0=0
  [ "$pg" = 1 ] && pgc0=$(pg_cpu)
  local i=0 vl=()
  for http in "$@"; do
    ENROLLCA_TOKEN=$token "$bin/enrollca-api-load" --url "http://127.0.0.1:$http" --mode validate \
      --certs validate.pem --requests $((validations / $#)) --concurrency $((16 / $#)) \
      >"$label-validate-$i.txt" 2>&1 &
    vl+=($!)
    i=$((i + 1))
  done
  for l in "${vl[@]}"; do wait "$l"; done
  cat "$label"-validate-*.txt
  if [ "$pg" = 1 ]; then
    echo "RESULT $label validate: postgres CPU $(echo "scale=3; ($(pg_cpu) - $pgc0) * 1000 / $validations" | bc) ms per answer"
  fi
}

# sled, one node.
"$bin/enrollca" init --data "$work/sled" >/dev/null
sed -i "s|^attestation_roots = \[\]|attestation_roots = [\"$work/att/root.pem\"]|" sled/config.toml
start_node "$work/sled"
read -r pid http https <<<"$node"
token=$(cat sled/admin-token)
curl -fsS "http://127.0.0.1:$http/roots.pem" >roots.pem
register_devices "$count" "http://127.0.0.1:$http" "$token"
nodes=("$pid $http $https")
pass sled 0
validation_set "$http" "$token" validate.pem
validate_pass sled 0 "$http"
kill "$pid"; wait "$pid" 2>/dev/null || true

# PostgreSQL, one node then two.
"${as_pg[@]}" "$pgbin/psql" -h 127.0.0.1 -p 15432 -U enrollca -d postgres -qc "CREATE DATABASE bench"
url=postgres://enrollca@127.0.0.1:15432/bench
ENROLLCA_STORE_BACKEND=postgres ENROLLCA_STORE_URL=$url "$bin/enrollca" init --data "$work/pg1" >/dev/null
sed -i "s|^attestation_roots = \[\]|attestation_roots = [\"$work/att/root.pem\"]|" pg1/config.toml
cp -a pg1 pg2
start_node "$work/pg1" ENROLLCA_STORE_BACKEND=postgres ENROLLCA_STORE_URL=$url
read -r pid http https <<<"$node"
token=$(cat pg1/admin-token)
curl -fsS "http://127.0.0.1:$http/roots.pem" >roots.pem
register_devices "$count" "http://127.0.0.1:$http" "$token"
nodes=("$pid $http $https")
psql_bench() { "${as_pg[@]}" "$pgbin/psql" -h 127.0.0.1 -p 15432 -U enrollca -d bench "$@"; }
[ -n "${PG_STATEMENTS:-}" ] && psql_bench -qc "CREATE EXTENSION pg_stat_statements"
pass pg 1
[ -n "${PG_STATEMENTS:-}" ] && psql_bench -c "SELECT round(calls::numeric / $count, 1) AS \"per enrolment\",
  round((total_exec_time * 1000 / calls)::numeric) AS \"us each\",
  left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
  FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
validation_set "$http" "$token" validate.pem
validate_pass pg 1 "$http"
start_node "$work/pg2" ENROLLCA_STORE_BACKEND=postgres ENROLLCA_STORE_URL=$url
read -r pid2 http2 https2 <<<"$node"
nodes=("$pid $http $https" "$pid2 $http2 $https2")
# The devices enrol again (a device may hold several certificates).
pass "pg x2" 1
validate_pass "pg x2" 1 "$http" "$http2"
