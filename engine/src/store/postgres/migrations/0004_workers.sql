-- Schema version 4: several workers on one database.
--
-- A queued or running run belongs to the worker executing it until `lease_until_ns`, which that
-- worker keeps renewing; a run whose lease passed is an orphan another worker claims. NULL: no
-- worker took it yet (a run from before this version, or one copied from sled), which makes it
-- an orphan one lease length after its creation.
ALTER TABLE runs ADD COLUMN owner text, ADD COLUMN lease_until_ns bigint;
-- The few runs leases concern (renewal by owner, the orphan scan), apart from the history.
CREATE INDEX runs_unfinished ON runs (owner, id) WHERE status IN ('queued', 'running');
-- A worker renews its queue claims by its id.
CREATE INDEX queue_by_claimer ON queue (claimed_by) WHERE claimed_by IS NOT NULL;

-- The shared rate budget: one token bucket per (vendor, credential), refilled continuously at
-- `per_minute / 60` tokens a second up to `per_minute`, as of `refilled_ns`, and paused until
-- `paused_until_ns` after a vendor's 429. Taking a token is one UPDATE of the row, which sets
-- `granted` to whether it took one (an UPDATE's RETURNING sees only the new row).
CREATE TABLE rate_buckets (
    vendor text COLLATE "C" NOT NULL,
    credential text COLLATE "C" NOT NULL,
    tokens double precision NOT NULL,
    refilled_ns bigint NOT NULL,
    paused_until_ns bigint NOT NULL DEFAULT 0,
    granted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (vendor, credential)
);
