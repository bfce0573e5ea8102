-- dupq schema 4: canonical links. A question closed as a duplicate of another points at it (one link per
-- question; chains are followed to their end when read, a cycle is refused when written: dupq/storage/store.py).
-- pair_seq is the labelled pair that closing stored (reopening removes it, and only it); NULL: none was stored.
-- A link dies with either of its questions.
CREATE TABLE canonical_links (
    question_id  text PRIMARY KEY REFERENCES questions(id) ON DELETE CASCADE,
    canonical_id text NOT NULL REFERENCES questions(id) ON DELETE CASCADE,
    pair_seq     bigint,
    actor        text NOT NULL,
    created_at   text NOT NULL
);
CREATE INDEX canonical_links_canonical ON canonical_links(canonical_id);
