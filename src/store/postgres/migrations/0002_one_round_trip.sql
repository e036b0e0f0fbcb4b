-- A write is one call of a function below: one round trip and one statement, where it was a
-- transaction of several (each statement costs the database about as much as the work it
-- does, and a device's enrolment makes dozens). A refusal raises an error of class EC, which
-- rolls the whole call back:
--   EC001  a document was not as its writer expected; DETAIL is the write's position (from 1)
--   EC002  the one-time challenge to use up is unknown, used or expired
--   EC003  the certificate's serial exists

-- A challenge's expiry to the nanosecond (the caller's clock decides, as on sled); the rows
-- written before keep their second, rounded down: they expire up to a second early.
ALTER TABLE challenges ADD COLUMN expires_ns bigint;
UPDATE challenges SET expires_ns = expires_at * 1000000000;
ALTER TABLE challenges ALTER COLUMN expires_ns SET NOT NULL;

-- Uses up a one-time challenge at `at_ns` (Unix ns): deletes its row, so a concurrent user
-- finds none.
CREATE FUNCTION enrollca_use_up(_hash bytea, _at_ns bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _expires bigint;
BEGIN
    DELETE FROM challenges c WHERE c.hash = _hash RETURNING c.expires_ns INTO _expires;
    IF _expires IS NULL OR _expires <= _at_ns THEN
        RAISE EXCEPTION 'the one-time challenge is unknown, used or expired'
            USING ERRCODE = 'EC002';
    END IF;
END
$$;

-- Applies document writes in order, each only if the document is as expected: `_expects[i]`
-- NULL expects it absent, else at that version; `_vals[i]` NULL deletes it.
CREATE FUNCTION enrollca_apply(
    _kinds smallint[], _ids text[], _expects bigint[], _vals bytea[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _met boolean;
    _n integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(_kinds, 1), 0) LOOP
        IF _expects[i] IS NULL AND _vals[i] IS NULL THEN
            _met := NOT EXISTS (SELECT 1 FROM docs d WHERE d.kind = _kinds[i] AND d.id = _ids[i]);
        ELSE
            IF _expects[i] IS NULL THEN
                INSERT INTO docs (kind, id, version, value)
                    VALUES (_kinds[i], _ids[i], 1, _vals[i]) ON CONFLICT DO NOTHING;
            ELSIF _vals[i] IS NULL THEN
                DELETE FROM docs d
                    WHERE d.kind = _kinds[i] AND d.id = _ids[i] AND d.version = _expects[i];
            ELSE
                UPDATE docs d SET version = d.version + 1, value = _vals[i]
                    WHERE d.kind = _kinds[i] AND d.id = _ids[i] AND d.version = _expects[i];
            END IF;
            GET DIAGNOSTICS _n = ROW_COUNT;
            _met := _n = 1;
        END IF;
        IF NOT _met THEN
            RAISE EXCEPTION 'a document changed concurrently'
                USING ERRCODE = 'EC001', DETAIL = i::text;
        END IF;
    END LOOP;
END
$$;

-- Uses up a challenge (if `_hash` is not NULL) and applies document writes.
CREATE FUNCTION enrollca_commit(
    _hash bytea, _at_ns bigint,
    _kinds smallint[], _ids text[], _expects bigint[], _vals bytea[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF _hash IS NOT NULL THEN
        PERFORM enrollca_use_up(_hash, _at_ns);
    END IF;
    PERFORM enrollca_apply(_kinds, _ids, _expects, _vals);
END
$$;

-- Used ACME nonces, by issue time (Unix ms, big-endian) then random part. Every signed ACME
-- request uses one, so they are unlogged: no WAL and no flush at commit, a fraction of a
-- durable write's cost. A crash or a failover empties unlogged tables, `nonce_epoch` with
-- `used_nonces`: the node that next finds the epoch gone starts a new one, and a nonce is
-- accepted only in the epoch it was issued in, so none used before the loss is accepted again.
CREATE UNLOGGED TABLE used_nonces (
    id bytea PRIMARY KEY
);
-- Used nonces were documents (kind 16) before; those nonces were shorter than today's and no
-- node accepts them any more, so their records go.
DELETE FROM docs WHERE kind = 16;
CREATE UNLOGGED TABLE nonce_epoch (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint NOT NULL
);

-- Uses up a nonce issued in `_epoch` (if `_id` is not NULL) and reads documents: a signed
-- request's nonce, the account that signed it and the resource it is about. Starts epoch
-- `_candidate` (the caller's random draw) when there is none. Returns a row per document
-- asked for, in order (one row of NULLs when none is), each with the current epoch and
-- whether the nonce was used up now.
CREATE FUNCTION enrollca_use_nonce(
    _epoch bigint, _id bytea, _candidate bigint, _read_kinds smallint[], _read_ids text[]
) RETURNS TABLE (current_epoch bigint, fresh boolean, doc_version bigint, doc_value bytea)
LANGUAGE plpgsql AS $$
DECLARE
    _current bigint;
    _n integer := 0;
BEGIN
    SELECT e.epoch INTO _current FROM nonce_epoch e;
    IF _current IS NULL THEN
        INSERT INTO nonce_epoch (epoch) VALUES (_candidate) ON CONFLICT DO NOTHING;
        SELECT e.epoch INTO _current FROM nonce_epoch e;
    END IF;
    IF _id IS NOT NULL AND _epoch = _current THEN
        INSERT INTO used_nonces (id) VALUES (_id) ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS _n = ROW_COUNT;
    END IF;
    IF coalesce(array_length(_read_ids, 1), 0) = 0 THEN
        RETURN QUERY SELECT _current, _n = 1, NULL::bigint, NULL::bytea;
    END IF;
    -- One primary-key lookup each (a join with the unnested keys may be planned as a scan).
    FOR i IN 1 .. coalesce(array_length(_read_ids, 1), 0) LOOP
        RETURN QUERY SELECT _current, _n = 1, d.version, d.value
            FROM (VALUES (1)) AS one
            LEFT JOIN docs d ON d.kind = _read_kinds[i] AND d.id = _read_ids[i];
    END LOOP;
END
$$;

-- Appends events (their bodies; each one's number is its row's `seq`) and notifies the nodes
-- at commit. `feed` stays locked until the commit, which orders the feed: it must be the
-- last thing a transaction does. Returns the last number handed out.
CREATE FUNCTION enrollca_append(_events bytea[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    _n bigint := coalesce(array_length(_events, 1), 0);
    _last bigint;
BEGIN
    UPDATE feed SET last = last + _n RETURNING last INTO _last;
    INSERT INTO events (seq, event)
        SELECT _last - _n + e.i, e.body FROM unnest(_events) WITH ORDINALITY AS e(body, i);
    PERFORM pg_notify('enrollca_events', _last::text);
    RETURN _last;
END
$$;

-- Records a certificate with what commits with it, and its event; returns the event's number.
CREATE FUNCTION enrollca_issue(
    _hash bytea, _at_ns bigint,
    _kinds smallint[], _ids text[], _expects bigint[], _vals bytea[],
    _serial bytea, _issuer text, _device text, _not_after bigint, _revocation bytea,
    _record bytea, _replaces bytea, _event bytea
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    _n integer;
BEGIN
    IF _hash IS NOT NULL THEN
        PERFORM enrollca_use_up(_hash, _at_ns);
    END IF;
    PERFORM enrollca_apply(_kinds, _ids, _expects, _vals);
    INSERT INTO certs (serial, issuer, device, not_after, revocation, expired_due,
                       expiring_due, record)
        VALUES (_serial, _issuer, _device, _not_after, _revocation, true, true, _record)
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS _n = ROW_COUNT;
    IF _n = 0 THEN
        RAISE EXCEPTION 'the serial exists' USING ERRCODE = 'EC003';
    END IF;
    -- What a renewal replaces will not need renewing.
    IF _replaces IS NOT NULL THEN
        UPDATE certs SET expiring_due = false WHERE serial = _replaces;
    END IF;
    RETURN enrollca_append(ARRAY[_event]);
END
$$;
