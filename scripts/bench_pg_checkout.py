"""What checking each pooled PostgreSQL connection as it is handed out costs (dupq/storage/postgres/db.py).

A private embedded PostgreSQL; ``SELECT 1`` through :meth:`Database.connection` (checked: one empty query first)
and through the bare pool, in alternating rounds; prints the p50 of each in microseconds.

Example:
    $ .venv/bin/python scripts/bench_pg_checkout.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(rounds: int = 10, per_round: int = 500) -> None:
    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.embedded import create_database, start

    server, url = start(Path(tempfile.mkdtemp(prefix="dupq-checkout-")) / "pg")
    db = Database(create_database(url, "checkout"), max_size=2)

    def checked() -> None:
        with db.connection() as c:
            c.execute("SELECT 1").fetchone()

    def bare() -> None:
        with db.pool.connection() as c:
            c.execute("SELECT 1").fetchone()

    try:
        for f in (checked, bare):
            for _ in range(200):
                f()
        us: dict[str, list[float]] = {"checked": [], "bare": []}
        for _ in range(rounds):
            for name, f in (("checked", checked), ("bare", bare)):
                t0 = time.perf_counter()
                for _ in range(per_round):
                    f()
                us[name].append((time.perf_counter() - t0) / per_round * 1e6)
        print({k: round(statistics.median(v), 1) for k, v in us.items()}, "µs per SELECT 1 with its checkout")
    finally:
        db.close()
        server.cleanup()


if __name__ == "__main__":
    main()
