"""The ``dupq`` command line: a thin click layer over :class:`dupq.service.DupQ`.

Example:
    $ dupq import questions.txt
    $ dupq search "How do I reverse a list in Python?" -k 5
    $ dupq serve --port 8000
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dupq.config import DEFAULT_K, Settings
from dupq.errors import DupQError


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into a one-line message and exit status 1 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dupq.data import DataError

        try:
            return fn(*args, **kwargs)
        except (DupQError, DataError) as e:
            raise click.ClickException(getattr(e, "message", str(e))) from None
        except FileNotFoundError as e:
            raise click.ClickException(f"file not found: {e.filename or e}") from None
        except KeyboardInterrupt:
            click.echo("interrupted; everything committed before the interruption is kept", err=True)
            sys.exit(130)

    return wrapper


@click.group()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DUPQ_HOME",
    help="State folder (default: $DUPQ_HOME or ./dupq-data).",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """dupq: find stored questions that ask the same thing."""
    ctx.obj = Settings.from_env(home=home)


def open_service(ctx: click.Context, **kwargs: Any):
    from dupq.service import DupQ

    return DupQ(ctx.obj, **kwargs)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--debug/--no-debug", default=False, help="Flask debug mode (development only).")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, debug: bool) -> None:
    """Run the web app and JSON API (Flask's development server)."""
    from web import create_app

    app = create_app({"DUPQ_HOME": str(ctx.obj.home), "DUPQ_SEED_BANK": ctx.obj.seed_bank})
    click.echo(f"dupq serving {ctx.obj.home} on http://{host}:{port}/ (model {app.extensions['dupq'].version})")
    app.run(host=host, port=port, debug=debug, use_reloader=False, threaded=True)


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.pass_context
@handle_errors
def import_(ctx: click.Context, file: Path, progress: bool) -> None:
    """Import questions from FILE (TSV, CSV, JSONL, plain text; a pair file gives both columns)."""
    with open_service(ctx) as svc:
        report = svc.import_file(file, progress=progress)
        click.echo(
            f"read {report.read}, added {report.added}, skipped {report.skipped} (already stored or repeated), "
            f"invalid {report.invalid}, in {report.seconds:.1f}s; {svc.store.count()} questions stored"
        )


@main.command()
@click.argument("text")
@click.option("-k", "k", default=DEFAULT_K, show_default=True, type=int, help="How many results.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON response.")
@click.pass_context
@handle_errors
def search(ctx: click.Context, text: str, k: int, as_json: bool) -> None:
    """Show the stored questions closest to TEXT."""
    from dupq.errors import BusyError

    try:
        svc = open_service(ctx)
    except BusyError:
        svc = open_service(ctx, read_only=True)  # a server owns the home: read beside it
    with svc:
        res = svc.search(text, k)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"model {res['model']} ({res['energy']}, threshold {res['threshold']})")
    for n, r in enumerate(res["results"], 1):
        mark = "  DUPLICATE" if r["duplicate"] else ""
        click.echo(f"{n:3d}. {r['score']:.3f}  {r['text']}  [{r['id']}]{mark}")


@main.command()
@click.pass_context
@handle_errors
def reindex(ctx: click.Context) -> None:
    """Rebuild the current model version's vector index from the store."""
    with open_service(ctx) as svc:
        n = svc.reindex()
        click.echo(f"indexed {n} questions for model {svc.version}")


if __name__ == "__main__":
    main()
