-- dupq SQLite schema 1: questions, the state table (revision, current model, history) and the model
-- version records (dupq/storage/registry.py). Statements are idempotent: a home upgraded by hand opens too.
CREATE TABLE IF NOT EXISTS questions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    text       TEXT NOT NULL,
    meta       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS questions_text ON questions(text);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO state(key, value) VALUES ('revision', '0');
CREATE TABLE IF NOT EXISTS models (
    version    TEXT PRIMARY KEY,
    path       TEXT NOT NULL,
    parent     TEXT,
    created_at TEXT NOT NULL,
    config     TEXT NOT NULL DEFAULT '{}'
);
