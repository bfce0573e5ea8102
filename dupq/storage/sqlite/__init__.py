"""The embedded default backend: one SQLite file (WAL) per home, for one machine."""
