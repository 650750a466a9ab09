-- Schema version 2: the OAuth token store, one row per credential (its `StoredToken` as JSON).
-- A worker spending a single-use refresh token locks the row (`SELECT ... FOR UPDATE`) until it
-- has written the tokens the vendor returned, so two workers never spend one.
CREATE TABLE tokens (
    credential text COLLATE "C" PRIMARY KEY,
    token json NOT NULL
);
