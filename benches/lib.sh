# Sourced by the benchmark scripts (from the repository root): a scratch directory `work`,
# the background processes started for the run (`pids+=($!)`) and extra clean-up steps
# (`at_exit CMD…`), all undone on exit. KEEP=1 keeps the directory for a look afterwards.
work=$(mktemp -d)
pids=()
exit_steps=()
at_exit() { exit_steps+=("$*"); }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for step in "${exit_steps[@]}"; do eval "$step" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A synthetic attestation CA laid out like Apple's (P-384 root and intermediate) in DIR:
# root.pem, intermediate.pem, intermediate.key, as enrollca-acme-load --attestation-ca wants.
attestation_ca() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout "$dir/root.key" \
    -out "$dir/root.pem" -days 2 -sha384 -subj "/CN=Bench Enterprise Attestation Root CA" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes \
    -keyout "$dir/intermediate.key" -out "$dir/i.csr" \
    -subj "/CN=Bench Enterprise Attestation Sub CA 1" 2>/dev/null
  printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n' >"$dir/ext"
  openssl x509 -req -in "$dir/i.csr" -CA "$dir/root.pem" -CAkey "$dir/root.key" -CAcreateserial \
    -days 2 -sha384 -extfile "$dir/ext" -out "$dir/intermediate.pem" 2>/dev/null
}

# Registers devices bench-0 … bench-(COUNT-1), serials BENCH000000 …, in imports of 1000
# (the most one takes): register_devices COUNT URL TOKEN [CURL ARGS…]. SERIAL_PREFIX=P
# registers p-0 …, serials P000000 … instead.
register_devices() {
  local count=$1 url=$2 token=$3 start end i prefix=${SERIAL_PREFIX:-BENCH}
  shift 3
  for start in $(seq 0 1000 $((count - 1))); do
    end=$((start + 999 < count - 1 ? start + 999 : count - 1))
    { printf '{"devices":['
      for i in $(seq "$start" "$end"); do
        printf '%s{"id":"%s-%d","serial":"%s%06d"}' "$([ "$i" = "$start" ] || echo ,)" \
          "${prefix,,}" "$i" "$prefix" "$i"
      done
      printf ']}'; } >"$work/import.json"
    curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' "$@" \
      --data @"$work/import.json" "$url/api/v1/devices" >/dev/null
  done
}

# Starts "$bin/enrollca serve" on "$work/data" at 127.0.0.1:HTTP and :HTTPS without rate
# limits (one load generator, one address), waits until it answers, sets enrollca_pid and
# fetches its roots into roots.pem: start_enrollca HTTP HTTPS
start_enrollca() {
  local http=$1 https=$2
  ENROLLCA_LOG_LEVEL=warn ENROLLCA_LISTEN_HTTP=127.0.0.1:$http ENROLLCA_LISTEN_HTTPS=127.0.0.1:$https \
    ENROLLCA_LIMITS_CLIENT_RATE=0 ENROLLCA_LIMITS_ACCOUNT_ORDER_RATE=0 \
    "$bin/enrollca" serve --data "$work/data" >enrollca.log 2>&1 </dev/null &
  pids+=($!)
  enrollca_pid=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http/healthz" 2>/dev/null && break
    sleep 0.1
  done
  kill -0 "$enrollca_pid" 2>/dev/null || { cat enrollca.log >&2; exit 1; }
  curl -fsS "http://127.0.0.1:$http/roots.pem" >roots.pem
}

# A private PostgreSQL cluster in $work/pg, as a deployment runs it (fsync and
# synchronous_commit on), as the postgres user when run as root: start_postgres PORT
# [SERVER OPTIONS…]. Sets `pgbin`, `as_pg` (the prefix that runs its tools) and `postmaster`.
start_postgres() {
  local port=$1
  shift
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
  mkdir "$work/pg"
  if [ "$(id -u)" = 0 ]; then
    chmod o+x "$work"   # mktemp's 0700 would keep the postgres user out
    chown postgres:postgres "$work/pg"
  fi
  "${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U enrollca --auth=trust -E UTF8 --locale=C >/dev/null
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200 $*" start >/dev/null
  at_exit "${as_pg[*]} $pgbin/pg_ctl -D $work/pg/data -m immediate stop"
  postmaster=$(head -1 "$work/pg/data/postmaster.pid")
}

# CPU seconds of a process (and of its reaped children, for the postmaster).
cpu() { awk '{printf "%.2f", ($14 + $15 + $16 + $17) / 100}' "/proc/$1/stat"; }

# CPU seconds of the cluster start_postgres started: the postmaster, every backend and
# background process, and those already reaped.
pg_cpu() {
  local total
  total=$(cpu "$postmaster")
  for p in $(cat /proc/"$postmaster"/task/*/children 2>/dev/null); do
    total=$(echo "$total + $(awk '{printf "%.2f", ($14 + $15) / 100}' /proc/$p/stat 2>/dev/null || echo 0)" | bc)
  done
  echo "$total"
}
