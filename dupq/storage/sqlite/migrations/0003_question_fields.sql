-- dupq SQLite schema 3: scoped search (dupq/filters.py). One row per value of each filterable field of each
-- question (Settings.filter_fields; a list field gives one row per element), value as dupq.filters.value_key
-- writes it. Written with the question in its transaction, gone with it (cascade), rebuilt when the declared
-- fields change (QuestionStore.index_fields; state 'filter_fields' names the fields it holds). (field, value)
-- finds a filter's questions; the primary key (seq, ...) checks given questions and serves the cascade.
CREATE TABLE IF NOT EXISTS question_fields (
    seq   INTEGER NOT NULL REFERENCES questions(seq) ON DELETE CASCADE,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (seq, field, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS question_fields_value ON question_fields(field, value, seq);
