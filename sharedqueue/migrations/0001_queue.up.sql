-- The build queue that server replicas share (package sharedqueue). A row
-- lives from a build's admission until its log is stored to the end.
CREATE TABLE build_queue (
    build_id    text COLLATE "C" PRIMARY KEY,
    seq         bigserial NOT NULL,
    tenant      text NOT NULL,
    -- Identical requests share a build: one row per key while it lives.
    dedup_key   text NOT NULL UNIQUE,
    -- The replica that alone may run it (the request's own credentials
    -- are in its memory only); NULL: any replica.
    owner       text,
    -- Not claimable before its record and first events are stored.
    ready       boolean NOT NULL DEFAULT false,
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running')),
    -- The replica running it, and until when its lease holds.
    replica     text,
    lease_until timestamptz,
    cancel      boolean NOT NULL DEFAULT false,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX build_queue_state_seq ON build_queue (state, seq);

-- The replicas alive: each renews its lease while it runs.
CREATE TABLE queue_replicas (
    name        text PRIMARY KEY,
    lease_until timestamptz NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);
