-- dupq schema 6: a promotion's re-embedding shared by every node. A run plans the questions a version lacks
-- as chunks of questions.seq ranges (lo, hi]; any node claims a chunk (FOR UPDATE SKIP LOCKED, a lease),
-- embeds it and marks it done in the transaction that writes its vectors. The node that completes the last
-- chunk takes the run's own lease and flips the pointer ('flipping' -> 'done', fenced by attempt). A run
-- with promote = false (a retrain job's worker filling its candidate's table) ends without moving the pointer.
CREATE TABLE reindex_runs (
    id          bigserial PRIMARY KEY,
    version     text NOT NULL,
    state       text NOT NULL CHECK (state IN ('embedding', 'flipping', 'done', 'failed')),
    rollback    boolean NOT NULL DEFAULT false,
    promote     boolean NOT NULL DEFAULT true,
    total       bigint NOT NULL DEFAULT 0,
    chunks      integer NOT NULL DEFAULT 0,
    rebuild     boolean NOT NULL DEFAULT false,
    owner       text,
    lease_until timestamptz,
    attempt     integer NOT NULL DEFAULT 0,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- One run at a time (nodes asking at once join it or supersede it, never run two).
CREATE UNIQUE INDEX reindex_runs_one_active ON reindex_runs ((true)) WHERE state IN ('embedding', 'flipping');

CREATE TABLE reindex_chunks (
    run         bigint NOT NULL REFERENCES reindex_runs(id) ON DELETE CASCADE,
    n           integer NOT NULL,
    lo          bigint NOT NULL,
    hi          bigint NOT NULL,
    state       text NOT NULL DEFAULT 'todo' CHECK (state IN ('todo', 'claimed', 'done')),
    owner       text,
    lease_until timestamptz,
    attempt     integer NOT NULL DEFAULT 0,
    done_by     text,
    rows        integer,
    seconds     real,
    done_at     timestamptz,
    error       text,
    PRIMARY KEY (run, n)
);
CREATE INDEX reindex_chunks_open ON reindex_chunks (run, n) WHERE state <> 'done';
