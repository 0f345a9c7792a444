-- The history of builds (history.Postgres). Build ids sort by creation
-- time; COLLATE "C" orders them by their bytes, as bbolt does, whatever the
-- database's locale.
CREATE TABLE builds (
    id     text COLLATE "C" PRIMARY KEY,
    tenant text    NOT NULL,
    repo   text    NOT NULL,
    state  integer NOT NULL,
    -- The BuildInfo protobuf, as PutBuild was given it. Appending events
    -- never rewrites it: LastSeq is read from events.
    record bytea   NOT NULL
);
-- A tenant's builds by id (ListBuilds); retention and the start of a
-- server select by state.
CREATE INDEX builds_tenant_id ON builds (tenant, id);
CREATE INDEX builds_state_id ON builds (state, id);

-- Each build's log: BuildEvent protobufs by seq. No foreign key: events may
-- come before their build's record, as they may in the bbolt store.
CREATE TABLE events (
    build_id text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    event    bytea  NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- Idempotency keys: which build a tenant's request_id started.
CREATE TABLE requests (
    tenant      text NOT NULL,
    request_id  text NOT NULL,
    build_id    text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX requests_build_id ON requests (build_id);
