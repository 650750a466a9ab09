-- Schema version 3: the records a `wait` block's `wake_when:` watches, one row per run and
-- record (`collection/key`, as sled's `timer_watches` keys). A record write moves every
-- watcher's timer to the epoch in its own transaction, so the run falls due at once.
CREATE TABLE timer_watches (
    record text COLLATE "C" NOT NULL,
    run_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (record, run_id)
);

-- Approval reminders, one per run waiting for approval under a `notify:` with
-- `remind_approvers_after`: when it started waiting, for which blocks, when the reminder falls
-- due, and when it was claimed for sending (NULL until then). Claiming is one conditional
-- UPDATE on the row as read, so of two workers one sends it.
CREATE TABLE approval_reminders (
    run_id text COLLATE "C" PRIMARY KEY,
    since_ns bigint NOT NULL,
    blocks text[] NOT NULL,
    due_ns bigint NOT NULL,
    sent_ns bigint
);
CREATE INDEX approval_reminders_pending ON approval_reminders (due_ns, run_id)
    WHERE sent_ns IS NULL;
