#!/usr/bin/env bash
# What PostgreSQL's cheapest statements cost on this machine: the floor under any design of
# the PostgreSQL backend. pgbench (16 clients, prepared statements, loopback TCP, fsync and
# synchronous_commit on) runs each primitive against the schema enrollca's migrations create,
# with records of the sizes a device enrolment writes; the postgres processes' CPU per
# statement is what an enrolment pays per statement of that kind, before any work of its own.
#
#   bash benches/pg_floor.sh [STATEMENTS PER CLIENT]   (default: 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-2000}
migrations=$PWD/src/store/postgres/migrations
. benches/lib.sh
cd "$work"
start_postgres 15433
psql_floor() { "${as_pg[@]}" "$pgbin/psql" -h 127.0.0.1 -p 15433 -U enrollca -d postgres -qAt "$@"; }
for m in "$migrations"/*.sql; do psql_floor -v ON_ERROR_STOP=1 -f "$m" >/dev/null; done
# An account (253 bytes of CBOR, as the bench's) to read, and the nonce epoch.
psql_floor -c "INSERT INTO docs VALUES (1, 'account', 1, decode(repeat('ab', 253), 'hex'))"
epoch=$(psql_floor -c "SELECT current_epoch FROM enrollca_use_nonce(NULL, NULL, 42, NULL, NULL)")

# Each primitive as a pgbench script; :n is unique per statement.
cat >read.sql <<'SQL'
SELECT id, version, value FROM docs WHERE kind = 1 AND id = 'account';
SQL
cat >nonce.sql <<SQL
\set n random(1, 9000000000000000000)
SELECT * FROM enrollca_use_nonce($epoch, int8send(:n) || int8send(:n), 0, 1::smallint, 'account');
SQL
cat >write.sql <<'SQL'
\set n random(1, 9000000000000000000)
INSERT INTO docs (kind, id, version, value) VALUES (3, :n::text, 1, decode(repeat('cd', 323), 'hex'));
SQL
cat >commit.sql <<'SQL'
\set n random(1, 9000000000000000000)
SELECT enrollca_commit(NULL, 0, ARRAY[3]::smallint[], ARRAY[:n::text], ARRAY[NULL]::bigint[], ARRAY[decode(repeat('cd', 323), 'hex')]);
SQL
cat >issue.sql <<'SQL'
\set n random(1, 9000000000000000000)
SELECT enrollca_issue(NULL, 0, ARRAY[]::smallint[], ARRAY[]::text[], ARRAY[]::bigint[], ARRAY[]::bytea[], int8send(:n) || int8send(:n), 'ecdsa', :n::text, 2000000000, NULL, decode(repeat('ef', 1137), 'hex'), NULL, decode(repeat('01', 160), 'hex'));
SQL

printf '%-8s %12s %22s\n' primitive statements/s 'postgres CPU µs each'
for p in read nonce write commit issue; do
  c0=$(pg_cpu)
  tps=$("${as_pg[@]}" "$pgbin/pgbench" -h 127.0.0.1 -p 15433 -U enrollca -n -M prepared -c "${CLIENTS:-16}" -j 2 \
    -t "$per" -f "$p.sql" postgres 2>&1 | awk '/^tps/ {printf "%.0f", $3}')
  c1=$(pg_cpu)
  printf '%-8s %12s %22s\n' "$p" "$tps" "$(echo "scale=1; ($c1 - $c0) * 1000000 / ($per * ${CLIENTS:-16})" | bc)"
done
