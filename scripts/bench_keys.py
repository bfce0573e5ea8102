"""What an API key costs a request: the first scrypt check of a key in a process, and every later one (the
remembered check plus the row read that sees a revocation). docs/benchmarks.md, "API keys".

Example:
    .venv/bin/python scripts/bench_keys.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="later checks to time")
    parser.add_argument("--database", help="a postgresql:// URL (default: a fresh SQLite home)")
    args = parser.parse_args()

    from dupq.access import Access
    from dupq.config import Settings

    with tempfile.TemporaryDirectory() as home, Access.open(
        Settings(home=home, seed_bank=None, database_url=args.database)
    ) as access:
        _, token = access.create_key(f"bench-{time.time_ns()}", "search", actor="bench")
        t0 = time.perf_counter()
        assert access.authenticate(token) is not None
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.n):
            access.authenticate(token)
        later = (time.perf_counter() - t0) / args.n
    print(json.dumps({"backend": "postgres" if args.database else "sqlite", "first_check_ms": round(first * 1e3, 1),
                      "later_check_us": round(later * 1e6, 1), "n": args.n}))


if __name__ == "__main__":
    main()
