-- dupq SQLite schema 5: API keys with scopes (dupq/storage/keys.py: only a scrypt hash of each key is kept) and
-- the audit log of moderation and admin actions (dupq/storage/audit.py), append-only: triggers refuse updates
-- and deletes of its rows.
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL CHECK (scope IN ('search', 'write', 'moderate', 'admin')),
    hash       TEXT NOT NULL,
    origins    TEXT NOT NULL DEFAULT '[]',
    rate_limit TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
-- A name is unique among active keys: a revoked key's name may be given to its replacement.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    key    TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
