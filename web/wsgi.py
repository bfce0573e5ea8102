"""WSGI entry point: ``app`` for any WSGI server.

The service is opened when this module is imported, so import it *in the serving process*: one process
with request threads (the home's writer lock allows one process, and a model loaded before a fork hangs in
the forked children).

Example:
    $ waitress-serve --host 127.0.0.1 --port 8000 --threads 4 web.wsgi:app
    $ gunicorn --workers 1 --threads 4 --bind 127.0.0.1:8000 web.wsgi:app   # never --preload

Settings come from the instance file (``$DUPQ_CONFIG``) and the environment (``DUPQ_HOME``, ``DUPQ_BACKEND``,
``DUPQ_ADMIN_TOKEN``, ...; docs/operations.md, Configuration); ``dupq serve --production`` does the same with waitress.
"""

from __future__ import annotations

from web import create_app

app = create_app()  # opens the service: the model is loaded and warm before the first request
