#!/usr/bin/env bash
# Device enrolments per second for each attestation format, side by side in one run against
# one server: complete ACME device-attest-01 flows (new account, permanent-identifier order
# for a registered device, attestation of a fresh P-256 device key, finalize, download) by
# target/release/enrollca-acme-load, in rounds apple, android-key, step, tpm (repeated, so
# drift on a noisy machine hits every format alike). Reports each format's server CPU per
# enrolment and its ratio to apple's (the target: at most 1.3x).
# Test CAs: Apple-style (P-384, openssl), Android (P-384 root and intermediate, P-256
# attestation key), YubiKey (P-256 root and f9), TPM (P-256 AIK CA; a fresh AIK per
# attestation, as the kit makes them); the server trusts all four roots.
#
#   bash benches/attestation_formats.sh [ENROLMENTS PER PASS] [ROUNDS] [CONCURRENCY]
#   (default: 1000, 3, 16)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000}
rounds=${2:-3}
concurrency=${3:-16}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --workspace --bin enrollca --bin enrollca-acme-load
fi
bin=${BIN:-$PWD/target/release}

. benches/lib.sh
cd "$work"

formats=(apple android-key step tpm)
declare -A prefix=([apple]=1 [android-key]=2 [step]=3 [tpm]=4)
attestation_ca apple
for f in android-key step tpm; do
  "$bin/enrollca-acme-load" --format "$f" --make-attestation-ca --attestation-ca "$f"
done
echo '{"entries": {}}' >status.json

"$bin/enrollca" init --data "$work/data" >/dev/null
roots=$(printf '"%s/%s/root.pem",' "$work" apple "$work" android-key "$work" step "$work" tpm)
sed -i -e "s|^attestation_roots = \[\]|attestation_roots = [${roots%,}]|" \
  -e 's|^attestation_formats = \["apple"\]|attestation_formats = ["apple", "android-key", "step", "tpm"]|' \
  -e "s|^android_status_list = .*|android_status_list = \"$work/status.json\"|" data/config.toml
start_enrollca 18093 18446

# Every pass enrols the same devices again (a re-enrolment is a full flow).
token=$(cat data/admin-token)
for f in "${formats[@]}"; do
  SERIAL_PREFIX=${prefix[$f]} register_devices "$count" https://127.0.0.1:18446 "$token" \
    --cacert "$work/data/ca/roots.pem"
done

for round in $(seq "$rounds"); do
  for f in "${formats[@]}"; do
    "$bin/enrollca-acme-load" --directory https://127.0.0.1:18446/acme/device/directory \
      --ca-file roots.pem --format "$f" --attestation-ca "$f" --device-prefix "${prefix[$f]}" \
      --orders "$count" --concurrency "$concurrency" --server-pid "$enrollca_pid" \
      --label "$f" | tee -a passes.txt
  done
done

# Per format: the median of its passes' server CPU per enrolment and rate, and the ratio of
# its CPU to apple's.
python3 - passes.txt <<'PY'
import re, statistics, sys
cpu, rate, failed = {}, {}, {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+): .* = ([0-9.]+)/s; (\d+) failed.*server CPU ([0-9.]+) ms/", line)
    if m:
        f = m.group(1)
        rate.setdefault(f, []).append(float(m.group(2)))
        failed[f] = failed.get(f, 0) + int(m.group(3))
        cpu.setdefault(f, []).append(float(m.group(4)))
apple = statistics.median(cpu["apple"])
print(f"{'format':12} {'enrolments/s':>13} {'server CPU ms':>14} {'vs apple':>9} {'failed':>7}")
for f in ["apple", "android-key", "step", "tpm"]:
    c = statistics.median(cpu[f])
    print(f"{f:12} {statistics.median(rate[f]):13.1f} {c:14.2f} {c / apple:8.2f}x {failed[f]:7d}")
PY
