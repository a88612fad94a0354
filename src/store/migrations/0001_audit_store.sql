-- The audit store, version 1. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Times are UTC in RFC 3339 with microseconds (e.g. 2026-01-02T03:04:05.000006Z), so text
-- order is time order and a date (2026-01-02) compares as its own midnight.

-- One row per answered hook call.
CREATE TABLE hook_calls (
    request_id        TEXT PRIMARY KEY,
    received_at       TEXT NOT NULL,
    hook              TEXT NOT NULL,
    hook_instance     TEXT NOT NULL,
    service_id        TEXT NOT NULL,
    client_iss        TEXT,
    client_sub        TEXT,
    client_tenant     TEXT,
    -- SHA-256 of the token's jti, hex: correlates without keeping the token's id.
    client_jti_sha256 TEXT,
    patient_id        TEXT,
    encounter_id      TEXT,
    fhir_server_host  TEXT,
    response_body     TEXT NOT NULL,
    -- Only with store.keep_requests (PHI).
    request_body      TEXT
);
CREATE INDEX hook_calls_received_at ON hook_calls (received_at);

-- One row per IORT order assessed in a call: what was decided, on what evidence, under
-- which policy version, and the coverage-assertion-id the EHR was given.
CREATE TABLE determinations (
    request_id       TEXT NOT NULL,
    position         INTEGER NOT NULL,
    decided_at       TEXT NOT NULL,
    patient_id       TEXT,
    order_ref        TEXT,
    billing_code     TEXT,
    covered          TEXT NOT NULL,
    -- JSON array: [{"criterion", "value", "evidence": ["Type/id", ...]}]
    criteria         TEXT NOT NULL,
    policy_id        TEXT NOT NULL,
    policy_version   TEXT NOT NULL,
    policy_effective TEXT NOT NULL,
    assertion_id     TEXT,
    card_uuid        TEXT,
    card_summary     TEXT,
    PRIMARY KEY (request_id, position)
);
CREATE INDEX determinations_assertion ON determinations (assertion_id);
CREATE INDEX determinations_patient ON determinations (patient_id, decided_at);
CREATE INDEX determinations_decided_at ON determinations (decided_at);
CREATE INDEX determinations_card ON determinations (card_uuid);

-- Feedback events (CDS Hooks 2.0 feedback), linked to their card (and through it to the
-- determination and its assertion).
CREATE TABLE feedback (
    id                   TEXT PRIMARY KEY,
    received_at          TEXT NOT NULL,
    request_id           TEXT NOT NULL,
    service_id           TEXT NOT NULL,
    card_uuid            TEXT NOT NULL,
    assertion_id         TEXT,
    outcome              TEXT NOT NULL,
    override_reason      TEXT,
    accepted_suggestions BIGINT NOT NULL,
    has_comment          BIGINT NOT NULL,
    outcome_timestamp    TEXT NOT NULL,
    client_iss           TEXT
);
CREATE INDEX feedback_card ON feedback (card_uuid);
CREATE INDEX feedback_received_at ON feedback (received_at);

-- Tokens seen by any instance (the shared JWT replay memory, PostgreSQL deployments):
-- (issuer, SHA-256 of jti) until the token could no longer be accepted anyway.
CREATE TABLE jti_seen (
    iss          TEXT NOT NULL,
    jti_sha256   TEXT NOT NULL,
    forget_after BIGINT NOT NULL,
    PRIMARY KEY (iss, jti_sha256)
);
CREATE INDEX jti_seen_forget_after ON jti_seen (forget_after);
