-- dupq SQLite schema 2: labelled pairs (every label is kept, the latest wins in training) and training jobs
-- (dupq/storage/jobs.py has their rules).
CREATE TABLE IF NOT EXISTS pairs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    question1     TEXT NOT NULL,
    question2     TEXT NOT NULL,
    pair_key      TEXT NOT NULL,
    label         INTEGER NOT NULL CHECK (label IN (0, 1)),
    source        TEXT NOT NULL,
    model_version TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pairs_key ON pairs(pair_key);
CREATE TABLE IF NOT EXISTS jobs (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    options    TEXT NOT NULL DEFAULT '{}',
    progress   TEXT NOT NULL DEFAULT '{}',
    metrics    TEXT NOT NULL DEFAULT '{}',
    error      TEXT,
    version    TEXT,
    pid        INTEGER,
    cancel     INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
