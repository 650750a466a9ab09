-- Schema version 1: every store trait's tables.
--
-- Ids (runs, queue entries) are ULIDs as text in the "C" collation, so they sort by creation
-- time as sled's keys do. Times are `bigint` nanoseconds since the Unix epoch (`*_ns`): exact,
-- as sled keeps them (timestamptz keeps microseconds, and a value read back must equal the one
-- written). Documents are `json`, not `jsonb`: jsonb reorders object keys, and a record's fields,
-- a run's vars and a step's outputs keep the order they were written in.

-- History: runs, their steps, workflow snapshots, the per-person index.
CREATE TABLE runs (
    id text COLLATE "C" PRIMARY KEY,
    workflow text NOT NULL,
    status text NOT NULL,
    created_ns bigint NOT NULL,
    finished_ns bigint,
    pruned boolean NOT NULL DEFAULT false,
    record json NOT NULL
);
CREATE INDEX runs_by_workflow ON runs (workflow, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_to_prune ON runs (finished_ns) WHERE NOT pruned;

CREATE TABLE steps (
    run_id text COLLATE "C" NOT NULL,
    seq integer NOT NULL,
    step json NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE snapshots (
    hash text PRIMARY KEY,
    text text NOT NULL
);

CREATE TABLE run_subjects (
    subject text COLLATE "C" NOT NULL,
    run_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (subject, run_id)
);

-- Parked runs' wake-up times; the lease is for the multi-worker step (a worker claims due
-- timers with FOR UPDATE SKIP LOCKED and holds them until `lease_until_ns`).
CREATE TABLE timers (
    run_id text COLLATE "C" PRIMARY KEY,
    at_ns bigint NOT NULL,
    lease_owner text,
    lease_until_ns bigint
);
CREATE INDEX timers_by_time ON timers (at_ns, run_id);

-- Records, by collection and key.
CREATE TABLE records (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    fields json NOT NULL,
    PRIMARY KEY (collection, key)
);

-- Per subject: the runs and queued requests holding it, and the change held back meanwhile.
CREATE TABLE in_flight (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (collection, key)
);

-- The run queue: claimed by a handle (`claimed_by`) until acked, released, or the lease ends.
CREATE TABLE queue (
    id text COLLATE "C" PRIMARY KEY,
    workflow text NOT NULL,
    request json NOT NULL,
    claimed_by text,
    lease_until_ns bigint
);

-- Trigger traces: each subject's last entries (the store keeps TRACE_LIMIT per subject).
CREATE TABLE trace_counters (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    next_seq bigint NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE traces (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (collection, key, seq)
);
-- A queued request's trace entry, until its run is linked.
CREATE TABLE trace_links (
    queue_id text COLLATE "C" PRIMARY KEY,
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    seq bigint NOT NULL
);

-- Schedules' last ticks.
CREATE TABLE schedules (
    workflow text COLLATE "C" PRIMARY KEY,
    last_fired_ns bigint NOT NULL
);

CREATE TABLE approvals (
    run_id text COLLATE "C" NOT NULL,
    block text NOT NULL,
    approved boolean NOT NULL,
    at_ns bigint NOT NULL,
    by_whom text,
    comment text,
    PRIMARY KEY (run_id, block)
);

CREATE TABLE cancels (
    run_id text COLLATE "C" PRIMARY KEY
);

-- The mass-change guard: destructive writes counted per workflow (a run's block once), and
-- runs an operator released.
CREATE TABLE guard_writes (
    run_id text COLLATE "C" NOT NULL,
    block text NOT NULL,
    workflow text NOT NULL,
    at_ns bigint NOT NULL,
    PRIMARY KEY (run_id, block)
);
CREATE INDEX guard_writes_window ON guard_writes (workflow, at_ns);
CREATE TABLE guard_releases (
    run_id text COLLATE "C" PRIMARY KEY,
    at_ns bigint NOT NULL
);

CREATE TABLE pauses (
    workflow text COLLATE "C" PRIMARY KEY,
    by_whom text NOT NULL,
    at_ns bigint NOT NULL
);

CREATE TABLE retry_marks (
    run_id text COLLATE "C" PRIMARY KEY,
    by_whom text NOT NULL,
    at_ns bigint NOT NULL,
    replay text
);
