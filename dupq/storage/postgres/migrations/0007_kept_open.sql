-- dupq schema 7: questions a person reopened (API, admin page, CLI). An import's duplicate link never closes
-- such a question again, nor stores its pair: a moderator's decision outranks a dump that still links it
-- (dupq/storage/store.py). Closing it again by hand removes the row. It dies with its question.
CREATE TABLE kept_open (
    question_id   text PRIMARY KEY REFERENCES questions(id) ON DELETE CASCADE,
    reopened_from text NOT NULL,
    actor         text NOT NULL,
    reopened_at   text NOT NULL
);
