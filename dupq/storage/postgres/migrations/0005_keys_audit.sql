-- dupq schema 5: API keys with scopes (dupq/storage/keys.py: only a scrypt hash of each key is kept) and the
-- audit log of moderation and admin actions (dupq/storage/audit.py), append-only: a trigger refuses updates,
-- deletes and truncation of its rows.
CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('search', 'write', 'moderate', 'admin')),
    hash       text NOT NULL,
    origins    text NOT NULL DEFAULT '[]',
    rate_limit text,
    created_at text NOT NULL,
    revoked_at text
);
-- A name is unique among active keys: a revoked key's name may be given to its replacement.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
    seq    bigserial PRIMARY KEY,
    at     text NOT NULL,
    key    text NOT NULL,
    action text NOT NULL,
    object text NOT NULL DEFAULT ''
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
