-- Schema version 3: the records a `wait` block's `wake_when:` watches, one row per run and
-- record (`collection/key`, as sled's `timer_watches` keys). A record write moves every
-- watcher's timer to the epoch in its own transaction, so the run falls due at once.
CREATE TABLE timer_watches (
    record text COLLATE "C" NOT NULL,
    run_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (record, run_id)
);
