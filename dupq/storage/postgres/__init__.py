"""The shared backend: PostgreSQL + pgvector, for several stateless nodes (``DUPQ_DATABASE_URL``)."""
