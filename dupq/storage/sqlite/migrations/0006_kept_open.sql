-- dupq SQLite schema 6: questions a person reopened (API, admin page, CLI). An import's duplicate link never
-- closes such a question again, nor stores its pair: a moderator's decision outranks a dump that still links it
-- (dupq/storage/store.py). Closing it again by hand removes the row. It dies with its question.
CREATE TABLE IF NOT EXISTS kept_open (
    question_id  TEXT PRIMARY KEY REFERENCES questions(id) ON DELETE CASCADE,
    reopened_from TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reopened_at  TEXT NOT NULL
);
