-- dupq schema 3: scoped search (dupq/filters.py). A filter is a condition on questions.meta in the WHERE of the
-- vector query (dupq.index.pgvector.filter_sql: (meta -> 'FIELD') @> ANY(values)); each filterable field has a
-- GIN index on that expression. These are the default fields' (Settings.filter_fields: tags, site); a node
-- creates the index of any other declared field when it opens (PgQuestionStore.index_fields).
-- Until this schema a batch of 64 or more questions (binary COPY) stored its meta as a jsonb string holding the
-- JSON text rather than the object: made the object it always meant.
UPDATE questions SET meta = (meta #>> '{}')::jsonb WHERE jsonb_typeof(meta) = 'string';
CREATE INDEX IF NOT EXISTS questions_filter_tags_9b6ef5a1 ON questions USING gin ((meta -> 'tags') jsonb_path_ops);
CREATE INDEX IF NOT EXISTS questions_filter_site_c099a42a ON questions USING gin ((meta -> 'site') jsonb_path_ops);
