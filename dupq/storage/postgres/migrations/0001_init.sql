-- dupq schema 1: the tables of dupq/store.py, dupq/jobs.py and dupq/registry.py on PostgreSQL, plus the
-- version files and the per-version vector tables. Shardable (Citus): questions and vec_* by seq,
-- pairs by pair_key; jobs, state, models, model_files, vector_tables stay reference/local tables.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE questions (
    seq        bigserial PRIMARY KEY,
    id         text NOT NULL UNIQUE,
    text       text NOT NULL,
    meta       jsonb NOT NULL DEFAULT '{}',
    created_at text NOT NULL
);
CREATE INDEX questions_text ON questions USING hash (text);

CREATE TABLE state (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO state(key, value) VALUES ('revision', '0');

CREATE TABLE models (
    version    text PRIMARY KEY,
    path       text NOT NULL,
    parent     text,
    created_at text NOT NULL,
    config     text NOT NULL DEFAULT '{}'
);

-- A version's files (weights, OpenVINO export, dupq.json, cross/), chunked: nodes share no disk.
CREATE TABLE model_files (
    version text NOT NULL REFERENCES models(version) ON DELETE CASCADE,
    path    text NOT NULL,
    chunk   integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (version, path, chunk)
);

CREATE TABLE pairs (
    seq           bigserial PRIMARY KEY,
    question1     text NOT NULL,
    question2     text NOT NULL,
    pair_key      text NOT NULL,
    label         smallint NOT NULL CHECK (label IN (0, 1)),
    source        text NOT NULL,
    model_version text,
    created_at    text NOT NULL
);
CREATE INDEX pairs_key ON pairs(pair_key);

CREATE TABLE jobs (
    id          text PRIMARY KEY,
    state       text NOT NULL,
    options     text NOT NULL DEFAULT '{}',
    progress    text NOT NULL DEFAULT '{}',
    metrics     text NOT NULL DEFAULT '{}',
    error       text,
    version     text,
    pid         integer,
    cancel      integer NOT NULL DEFAULT 0,
    created_at  text NOT NULL,
    updated_at  text NOT NULL,
    owner       text,
    lease_until timestamptz,
    attempt     integer NOT NULL DEFAULT 0
);
-- One active job at a time, enforced by the database (several nodes may ask at once).
CREATE UNIQUE INDEX jobs_one_active ON jobs ((true))
    WHERE state IN ('queued', 'running', 'evaluating', 'indexing', 'ready');

-- One vector table per model version (vec_<n>), with its HNSW index; rows die with their question.
CREATE SEQUENCE vector_table_seq;
CREATE TABLE vector_tables (
    version  text PRIMARY KEY,
    tbl      text NOT NULL UNIQUE,
    dim      integer NOT NULL,
    energy   text NOT NULL,
    revision bigint NOT NULL DEFAULT -1
);
