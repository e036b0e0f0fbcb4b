#!/usr/bin/env python3
"""Where a server's CPU went, by the costs an enrolment is made of.

Reads `perf script -F comm,ip,sym` (call graphs recorded with --call-graph dwarf) on stdin
and prints each category's share of the samples. A sample goes to the first category, in
the order below, that its whole stack matches: crypto first (it is called from everything
else), then the store, then the layers around a request. Optional argument: the server's
CPU milliseconds per operation, to print each share in milliseconds too.
"""

import re
import sys
from collections import Counter

STORE = "store (sled, writer, IO threads)"

# (category, regex on a frame, regex another frame must also match, or None)
CATEGORIES = [
    ("JWS verify", r"acme::jws::Jwk::verify", None),
    ("attestation chain verify", r"verify_signature|x509_parser::verify", r"enrollca::attest"),
    ("CSR verify", r"verify_signature|x509_parser::verify", r"ca::csr"),
    ("signing", r"rcgen::|EcdsaKeyPair::sign|sign_crl", None),
    ("attestation parsing", r"enrollca::attest", None),
    (STORE, r"sled::|enrollca::store", None),
    ("TLS", r"rustls", None),
    ("ACME logic and JSON", r"enrollca::acme|serde_json", None),
    ("HTTP (hyper, axum, sockets)", r"hyper::|hyper_util|axum::|tower::|httparse|http::", None),
    ("runtime, threads, scheduling", r"tokio::|mio::|parking_lot|std::thread|std::sys", None),
]
RULES = [(n, re.compile(a), re.compile(b) if b else None) for n, a, b in CATEGORIES]
STORE_THREADS = re.compile(r"^(store-writer|sled-io-\d+)$")


def category(comm, frames):
    for name, frame, also in RULES:
        if any(frame.search(f) for f in frames) and (
            also is None or any(also.search(f) for f in frames)
        ):
            return name
    # The writer's and sled's threads are the store, whatever their frames say (the
    # kernel's side of a sync or a wake-up has no sled frame). sled's IO threads exist only
    # without the vendor/sled patch.
    if STORE_THREADS.match(comm):
        return STORE
    return "other (kernel, allocator, unresolved)"


def samples(lines):
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif line[0] not in " \t":
            if comm is not None:
                yield comm, frames
            comm, frames = line.split()[0], []
        else:
            parts = line.split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if comm is not None:
        yield comm, frames


def main():
    per_op = float(sys.argv[1]) if len(sys.argv) > 1 else None
    counts = Counter(category(c, f) for c, f in samples(sys.stdin))
    total = sum(counts.values())
    if total == 0:
        sys.exit("no samples")
    for name, n in counts.most_common():
        share = n / total
        ms = f"  {share * per_op:.3f} ms" if per_op else ""
        print(f"  {100 * share:5.1f}%{ms}  {name}")


if __name__ == "__main__":
    main()
