-- dupq schema 2: the live nodes, so that a promotion waits (bounded) until every live node has loaded the
-- new version and the switch is instant everywhere.
CREATE TABLE nodes (
    name     text PRIMARY KEY,
    seen     timestamptz NOT NULL,
    serving  text,
    prepared text
);
