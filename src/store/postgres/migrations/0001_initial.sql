-- The records are the same CBOR as sled's (store::codec); the columns beside them are what
-- queries select and order on. Times used in queries are Unix seconds, as in sled's indexes.

-- One row per certificate: its record, and the columns the listings, the CRL and the sweeps
-- use. `expired_due`/`expiring_due` say that its `expired`/`expiring` event is still to come.
CREATE TABLE certs (
    serial       bytea PRIMARY KEY,
    issuer       text COLLATE "C" NOT NULL,
    device       text COLLATE "C",
    not_after    bigint NOT NULL,
    -- CBOR of store::Revoked once revoked (what a CRL lists, without reading the record).
    revocation   bytea,
    expired_due  boolean NOT NULL,
    expiring_due boolean NOT NULL,
    record       bytea NOT NULL
);
CREATE INDEX certs_by_device ON certs (device, serial) WHERE device IS NOT NULL;
CREATE INDEX certs_by_issuer ON certs (issuer, serial);
CREATE INDEX certs_revoked ON certs (issuer, serial) WHERE revocation IS NOT NULL;
CREATE INDEX certs_expired_due ON certs (not_after) WHERE expired_due;
CREATE INDEX certs_expiring_due ON certs (not_after) WHERE expiring_due;

-- The event feed. `feed.last` is taken FOR UPDATE by every transaction that appends, last
-- thing before its commit: numbers are handed out in commit order, so a reader never sees
-- event n+1 before event n, whichever node wrote them.
CREATE TABLE events (
    seq   bigint PRIMARY KEY,
    event bytea NOT NULL
);
CREATE TABLE feed (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint NOT NULL
);
INSERT INTO feed (last) VALUES (0);

CREATE TABLE issuers (
    id     text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);

-- One-time challenges, known only by their SHA-256.
CREATE TABLE challenges (
    hash       bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    record     bytea NOT NULL
);
CREATE INDEX challenges_by_expiry ON challenges (expires_at);

-- Protocol documents (store::DocKind's tag), compare-and-swap on `version`. Ids compare
-- byte-wise, as in sled, so listings page in the same order on both.
CREATE TABLE docs (
    kind    smallint NOT NULL,
    id      text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    value   bytea NOT NULL,
    PRIMARY KEY (kind, id)
);
