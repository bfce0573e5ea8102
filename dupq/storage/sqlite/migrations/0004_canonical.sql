-- dupq SQLite schema 4: canonical links. A question closed as a duplicate of another points at it (one link per
-- question; chains are followed to their end when read, a cycle is refused when written: dupq/storage/store.py).
-- pair_seq is the labelled pair that closing stored (reopening removes it, and only it); NULL: none was stored.
-- A link dies with either of its questions.
CREATE TABLE IF NOT EXISTS canonical_links (
    question_id  TEXT PRIMARY KEY REFERENCES questions(id) ON DELETE CASCADE,
    canonical_id TEXT NOT NULL REFERENCES questions(id) ON DELETE CASCADE,
    pair_seq     INTEGER,
    actor        TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS canonical_links_canonical ON canonical_links(canonical_id);
