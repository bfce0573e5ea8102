"""The ``dupq`` command line: a thin click layer over :class:`dupq.service.DupQ`.

Example:
    $ dupq import questions.txt
    $ dupq search "How do I reverse a list in Python?" -k 5
    $ dupq serve --port 8000
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dupq.config import DEFAULT_K, Settings, SettingsError
from dupq.errors import DupQError
from dupq.training.config import Option, options
from dupq.training.progress import phase_printer


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
    help="State folder (default: $DUPQ_HOME or ./dupq-data).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instance file (TOML with settings keys; default: $DUPQ_CONFIG). The environment and options override it.",
)
@click.option(
    "--database",
    "database_url",
    metavar="URL",
    help="PostgreSQL database (postgresql://...) shared by stateless nodes (default: $DUPQ_DATABASE_URL; "
    "none: the SQLite home).",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None, config_file: Path | None, database_url: str | None) -> None:
    """dupq: find stored questions that ask the same thing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this entry point owns the environment: weights from disk only
    try:
        ctx.obj = Settings.load(environ=os.environ, config_file=config_file, home=home, database_url=database_url)
    except SettingsError as e:
        raise click.UsageError(str(e)) from None


def cli_actor() -> str:
    """Who acts in the audit log when the command line does: ``cli:<user>`` (the shell's user)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment (a bare container)
        return f"cli:uid-{os.getuid()}"


def open_service(ctx: click.Context, **kwargs: Any):
    from dupq.service import DupQ

    return DupQ(ctx.obj, **kwargs)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--debug/--no-debug", default=False, help="Flask debug mode (development only).")
@click.option("--production", is_flag=True,
              help="Serve with waitress (one process, request threads) instead of Flask's server.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Request threads of the production server.")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, debug: bool, production: bool, threads: int) -> None:
    """Run the web app and JSON API (Flask's development server; --production: waitress).

    Production is one process with request threads: the model is loaded once, after any fork, and one
    process owns the home (its writer lock); searches run concurrently, each in its own OpenVINO request.
    """
    from web import create_app

    app = create_app(settings=ctx.obj)  # opens the service: the model is loaded and warm before the port opens
    svc = app.extensions["dupq"]
    server = f"waitress, {threads} threads" if production else "Flask development server"
    click.echo(f"dupq serving {ctx.obj.home} on http://{host}:{port}/ (model {svc.version}, {server})")
    if production:
        import waitress

        waitress.serve(app, host=host, port=port, threads=threads, ident="dupq")
    else:
        app.run(host=host, port=port, debug=debug, use_reloader=False, threaded=True)


@main.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["stackexchange", "github"]),
              help="Read PATH as this export (default: recognised: a folder holding Posts.xml, GitHub issues JSON).")
@click.option("--site", help="Site or repository of an export's ids (default: the folder's name, e.g. askubuntu.com; "
              "GitHub: each issue's repository).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.pass_context
@handle_errors
def import_(ctx: click.Context, path: Path, fmt: str | None, site: str | None, progress: bool) -> None:
    """Import questions from PATH: a question file (TSV, CSV, JSONL, plain text; a pair file gives both columns),
    a Stack Exchange site folder (Posts.xml, PostLinks.xml) or GitHub issues (.json / .jsonl from the REST API)."""
    from dupq.sources import detect

    fmt = fmt or detect(path)
    if fmt is None and not path.is_dir() and site is not None:
        raise click.UsageError("--site applies to an export (a Stack Exchange folder or GitHub issues), not to "
                               f"the question file {path}")
    with open_service(ctx) as svc:
        if fmt is None and not path.is_dir():
            report = svc.import_file(path, progress=progress)
            click.echo(
                f"read {report.read}, added {report.added}, skipped {report.skipped} (already stored or repeated), "
                f"invalid {report.invalid}, in {report.seconds:.1f}s; {svc.count()} questions stored"
            )
            return
        r = svc.import_export(path, fmt=fmt, site=site, progress=progress).to_dict()
        github = r["format"] == "github"
        skipped = f"{r['pull_requests']} pull requests" if github else f"{r['other_posts']} answers and other posts"
        lines = [
            f"{r['format']} export {path} ({r['site'] or 'sites from the issues'}): read {r['questions']} questions, "
            f"added {r['added']}, skipped {r['existing']} already stored and {r['same_text']} whose text is stored "
            f"under another id; {skipped} skipped",
            f"malformed rows skipped: {r['malformed']}",
            *(f"  {m}" for m in r["malformed_samples"]),
            f"duplicate links: {r['links']} -> {r['pairs_added']} labelled pairs added ({r['pairs_existing']} "
            f"already labelled, {r['pairs_self']} of one text); {r['links_missing']} to posts the export lacks",
            *(f"  {a} -> {b}" for a, b in r["missing_samples"]),
            f"closed as duplicates: {r['closed']} ({r['closed_existing']} already so, {r['closed_other']} already "
            f"closed onto another question); {r['cycles']} links refused: they would close a cycle",
            *(f"  {a} -> {b}" for a, b in r["cycle_samples"]),
            f"in {r['seconds']:.1f}s; {svc.count()} questions stored",
        ]
        if r["duplicates_unnamed"]:
            lines.insert(-1, f"{r['duplicates_unnamed']} issues marked duplicate name no issue of their repository")
        if r["links_unstored"]:
            lines.insert(-1, f"{r['links_unstored']} links skipped: a question they name is no longer stored")
        if r["kept_open"]:
            lines.insert(-1, f"{r['kept_open']} links left open: a person reopened the question here (dupq reopen, "
                             "the API or the admin page)")
        if r["links_reopened"]:
            lines.insert(-1, f"{r['links_reopened']} links dropped: the question was reopened (PostHistory.xml)")
        click.echo("\n".join(lines))


@main.command("import-pairs")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
@handle_errors
def import_pairs(ctx: click.Context, file: Path) -> None:
    """Import labelled pairs from FILE (TSV, CSV, JSONL: question1, question2, is_duplicate or label)."""
    with open_service(ctx) as svc:
        r = svc.import_pairs(file)
        click.echo(
            f"added {r['added']} pairs (dropped {r['repeats']} repeats, {r['self_pairs']} self-pairs, "
            f"{r['invalid']} with a question over the length limit; "
            f"{r['conflicts']} conflicting labels resolved, latest wins); "
            f"{sum(svc.pair_counts().values())} stored"
        )


@main.command()
@click.argument("text")
@click.option("-k", "k", default=DEFAULT_K, show_default=True, type=int, help="How many results.")
@click.option("--rerank/--no-rerank", default=None,
              help="Re-score the top candidates with the version's cross-encoder (default: the rerank setting).")
@click.option("--filter", "filter_", metavar="JSON",
              help='Only questions whose meta matches, e.g. \'{"site": "askubuntu.com"}\' or '
              '\'{"tags": {"any": ["wifi", "dns"]}}\' (fields: the filter_fields setting).')
@click.option("--json", "as_json", is_flag=True, help="Print the JSON response.")
@click.pass_context
@handle_errors
def search(ctx: click.Context, text: str, k: int, rerank: bool | None, filter_: str | None, as_json: bool) -> None:
    """Show the stored questions closest to TEXT."""
    scope = None
    if filter_ is not None:
        try:
            scope = json.loads(filter_)
        except ValueError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="--filter") from None
    with _open_for_reading(ctx) as svc:
        res = svc.search(text, k, rerank=rerank, filter=scope)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"model {res['model']} ({res['energy']}, scorer {res['scorer']}, threshold {res['threshold']})")
    for n, r in enumerate(res["results"], 1):
        mark = "  DUPLICATE" if r["duplicate"] else ""
        click.echo(f"{n:3d}. {r['score']:.3f}  {r['text']}  [{r['id']}]{mark}")
        for d in r.get("duplicates", []):
            click.echo(f"       asked before as: {d['score']:.3f}  {d['text']}  [{d['id']}]")


@main.command("close")
@click.argument("qid")
@click.option("--as-duplicate-of", "canonical", required=True, metavar="ID",
              help="The question QID duplicates (its canonical question, or one closed onto it).")
@click.pass_context
@handle_errors
def close(ctx: click.Context, qid: str, canonical: str) -> None:
    """Close question QID as a duplicate of another: searches answer with the canonical question (QID attached),
    and the pair is stored labelled for the next retrain."""
    with open_service(ctx) as svc:
        r = svc.close_as_duplicate(qid, canonical, actor="cli")
    if r["closed"]:
        click.echo(f"{qid} is closed as a duplicate of {r['duplicate_of']} (labelled pair {r['pair_id']})")
    else:
        click.echo(f"{qid} already was a duplicate of {r['duplicate_of']}: nothing changed")


@main.command("reopen")
@click.argument("qid")
@click.pass_context
@handle_errors
def reopen(ctx: click.Context, qid: str) -> None:
    """Reopen question QID, closed as a duplicate (its link and the labelled pair closing stored are removed)."""
    with open_service(ctx) as svc:
        r = svc.reopen(qid, actor="cli")
    removed = f"; labelled pair {r['pair_removed']} removed" if r["pair_removed"] is not None else ""
    click.echo(f"{qid} is reopened (it was a duplicate of {r['reopened_from']}){removed}")


@main.command()
@click.pass_context
@handle_errors
def reindex(ctx: click.Context) -> None:
    """Rebuild the current model version's vector index from the store."""
    with open_service(ctx) as svc:
        n = svc.reindex()
        click.echo(f"indexed {n} questions for model {svc.version}")


def _version_configs(svc: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each registered version's record and dupq.json (for the report's training curves); gone folders skipped."""
    out = []
    for record in svc.versions():
        try:
            out.append((record, svc.version_config(record["version"])))
        except FileNotFoundError:
            continue
    return out


def _open_for_reading(ctx: click.Context):
    """The service, read-only beside a running server (as ``search`` does)."""
    from dupq.errors import BusyError

    try:
        return open_service(ctx)
    except BusyError:
        return open_service(ctx, read_only=True)


def _shown(value: Any) -> str:
    """A default as help text shows it: ``5e-05`` -> ``5e-5``, ``40.0`` -> ``40``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("e-0", "e-").replace("e+0", "e+")


def _option_type(option: Option) -> click.ParamType | None:
    """The click type of a :class:`TrainConfig` field (None: a ``--x/--no-x`` flag); a type the command line
    cannot take raises ``TypeError`` (``tests/unit/test_train_options.py`` names the field)."""
    if bool in option.types:
        return None
    if float in option.types:
        return click.FLOAT
    if int in option.types:
        return click.INT
    if option.choices:
        return click.Choice(option.choices)
    if str in option.types:
        return click.STRING
    raise TypeError(f"TrainConfig.{option.name}: no command-line type for {option.types}")


def option_help(option: Option) -> str:
    """The help of a :class:`TrainConfig` field's flag: its declared help and default (``None``: what it means)."""
    if bool in option.types and option.default is not None:
        on, _, off = option.cli[0].partition("/")
        default = (on if option.default else off) or ("on" if option.default else "off")
    elif option.default is None:
        default = option.none or "none"
    else:
        default = _shown(option.default)
    if option.cli_none is not None:
        default += f"; {_shown(option.cli_none)} = {option.none or 'none'}"
    return option.described(f"default {default}")


def train_config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One option per :class:`dupq.training.config.TrainConfig` field, made from the field's declaration (flag
    ``--name-with-dashes`` or its ``cli``, type, choices, help and default); the command gets the options given as
    ``config_options`` (the ``cli_none`` value, e.g. ``--time-budget 0``, as None). A new field is a new option."""
    declared: list[tuple[Option, click.ParamType | None]] = []
    for option in options():
        try:
            declared.append((option, _option_type(option)))
        except TypeError:
            continue  # not on the command line: the test that the CLI exposes every field names it

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {}
        for option, _ in declared:
            value = kwargs.pop(option.name)
            if value is not None:  # None: not given
                given[option.name] = None if option.cli_none is not None and value == option.cli_none else value
        return fn(*args, config_options=given, **kwargs)

    for option, kind in reversed(declared):
        typed = {"type": kind} if kind is not None else {}
        command = click.option(*option.cli, option.name, default=None, help=option_help(option), **typed)(command)
    return command


@main.command()
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dev", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Dev pairs for checkpoint selection and threshold calibration (default: a cluster split).")
@train_config_options
@click.option("--from", "start", help="Version to fine-tune (default: the current one; 'base' = untuned).")
@click.option("--base", "base", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A SentenceTransformer folder to start from instead of a version (not with --from).")
@click.option("--promote", is_flag=True, help="Make the new version current (re-embeds the stored questions).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Training processes on this node, data-parallel (torchrun: gloo on CPUs, NCCL on GPUs; at most "
              "one per core or GPU). --batch-size is per process; --max-steps counts optimiser steps.")
@click.option("--nnodes", type=int, default=1, show_default=True,
              help="Nodes of a multi-host data-parallel run (start the same command on each; docs/training.md).")
@click.option("--node-rank", type=int, default=0, show_default=True,
              help="This node's index among --nnodes; node 0 saves and registers the version.")
@click.option("--master-addr", help="Address of node 0 (multi-host runs).")
@click.option("--master-port", type=int, help="Rendezvous port on node 0 (multi-host runs; default 29500).")
@click.pass_context
@handle_errors
def train(ctx: click.Context, pairs: tuple[Path, ...], dev: Path | None, start: str | None, base: Path | None,
          promote: bool, progress: bool, nproc: int, nnodes: int, node_rank: int, master_addr: str | None,
          master_port: int | None, config_options: dict[str, Any]) -> None:
    """Fine-tune on labelled PAIRS files into a new model version (not served until promoted).

    Within each file, a ``source`` with both labels is labelled data (contrastive loss, cross-encoder); a
    ``source`` of duplicates only is positive-only data (the ranking loss). The defaults are the recommended
    recipe (docs/training.md).
    """
    from dupq.data import read_pairs, read_pairs_by_source
    from dupq.training import TrainConfig, split_by_labels
    from dupq.training.distributed import Launch, check_launch

    if start and base:
        raise click.UsageError("give either --from VERSION or --base PATH, not both")
    launch = Launch(nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                    master_port=master_port)
    try:
        check_launch(launch)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if promote and node_rank > 0:
        raise click.UsageError("--promote belongs on node 0, which saves and registers the version")
    try:
        config = TrainConfig(**config_options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    train_pairs: list[Any] = []
    positive_only: list[Any] = []
    sources: dict[str, list[Any]] = {}  # by file: the per-source checks of the recipe's selection
    for f in pairs:  # malformed files fail before any model work
        labelled, pos = split_by_labels(read_pairs_by_source(f))
        train_pairs += labelled
        positive_only += pos
        sources.setdefault(f.name, []).extend([*labelled, *pos])
    dev_pairs = read_pairs(dev).pairs if dev else None
    if launch.distributed:
        # Node 0 owns the home (writer lock) and registers the version; another node only reads its start version.
        with open_service(ctx) if node_rank == 0 else _open_for_reading(ctx) as svc:
            new = svc.train_data_parallel(train_pairs, config, launch, start=start or "current", base=base,
                                          dev_pairs=dev_pairs, positive_only=positive_only, sources=sources,
                                          show_progress_bar=progress, logs_dir=ctx.obj.logs_dir)
            if new is None:
                click.echo(f"node {node_rank}: its {nproc} process(es) are done; node 0 saves the version")
                return
            _report_training(svc, new, base, promote, progress, launch)
        return
    with open_service(ctx) as svc:
        new = svc.train_version(train_pairs, config, start=start or "current", base=base, dev_pairs=dev_pairs,
                                positive_only=positive_only, sources=sources, show_progress_bar=progress,
                                progress=phase_printer(config) if progress else None)
        _report_training(svc, new, base, promote, progress, launch)


def selection_lines(selection: dict[str, Any] | None) -> list[str]:
    """How the version's recipe was chosen on dev (dupq.json's ``"selection"``), in a few lines."""
    if not selection:
        return []
    st, wise, rr, th = selection["steps"], selection["base_weight"], selection["reranker"], selection["threshold"]
    lines = [f"selection on {selection['dev']['pairs']} dev pairs"
             + ("" if selection["dev"]["given"] else f" (a cluster split, {selection['dev']['dev_fraction']:g} "
                "of the questions)") + ":",
             f"  steps: {st['trained']} of {st['planned']} trained"
             + (", stopped early (dev AP stopped improving)" if st["stopped_early"] else "")
             + f"; {st['reason']}"]
    cands = wise.get("candidates") or []
    if cands:
        shown = "; ".join(
            f"{c['base_weight']:g}: AP {c['checks']['dev']['ap']:.4f} nDCG@10 {c['checks']['dev']['ndcg@10']:.4f}"
            + ("" if c.get("meets_constraint") else " (nDCG@10 below the start)") for c in cands)
        start = wise["start"].get("dev", {})
        lines.append(f"  WiSE-FT weight {wise['chosen']:g}: {wise['reason']}; starting model AP "
                     f"{start.get('ap', float('nan')):.4f} nDCG@10 {start.get('ndcg@10', float('nan')):.4f}; "
                     f"candidates {shown}")
    else:
        lines.append(f"  WiSE-FT weight {wise['chosen']:g}: {wise['reason']}")
    lines.append(f"  re-ranker: {rr['reason']}")
    lines.append(f"  threshold {th['threshold']:.4f} for {th['policy']}: dev precision {th['precision']:.3f}, "
                 f"recall {th['recall']:.3f}")
    refit = selection.get("refit")  # absent in versions trained before the refit existed
    if refit:
        lines.append(f"  {refit['reason']}" + (f" ({refit['pairs']} pairs, {refit['steps']} steps; the dev numbers "
                                               "above are the selection run's, held out)" if refit["done"] else ""))
    return lines


def _report_training(svc: Any, new: Any, base: Path | None, promote: bool, progress: bool, launch: Any) -> None:
    """The summary of ``dupq train`` (data counts, dev metrics, phase seconds), then ``--promote``."""
    result, version = new.result, new.version
    pm, rm, c = result.metrics["dev"]["pairs"], result.metrics["dev"]["retrieval"], result.counts
    procs = f" on {launch.world_size} processes" if launch.distributed else ""
    click.echo(
        f"trained {version} from {new.parent or base}{procs} in {result.seconds:.0f}s "
        f"({result.pairs_per_second:.1f} twin pairs/s): "
        f"{c['train_pairs']} training pairs ({c['positives']} positive, {c['negatives']} negative in the "
        f"contrastive loss; {c['positive_only_used'] if c['ranking_pairs'] else 0} positive-only of "
        f"{c['positive_only_pairs']} and {c.get('labelled_duplicates_ranked', 0)} labelled duplicates in the "
        f"ranking loss; {c['mined_negatives']} mined negatives), {c['dev_pairs']} dev pairs, "
        f"{c['dropped_crossing_pairs']} dropped as crossing the split"
    )
    click.echo(
        f"twin dev: AP {pm['ap']:.4f}, best F1 {pm['best_f1']:.4f}, nDCG@10 {rm['ndcg@10']:.4f}; served "
        f"threshold {pm['threshold']:.4f} ({(result.selection or {}).get('threshold', {}).get('policy', 'max_f1')}; "
        f"max-F1 {result.thresholds['f1']:.4f}, max-accuracy {result.thresholds['accuracy']:.4f})"
    )
    if result.cross:
        cp = result.cross["metrics"]["dev"]["pairs"]
        click.echo(
            f"cross-encoder dev: AP {cp['ap']:.4f}, best F1 {cp['best_f1']:.4f}; threshold "
            f"{result.cross['threshold']:.4f}; {result.cross['seconds']:.0f}s"
        )
        fusion = result.cross.get("fusion")
        if fusion and fusion.get("metrics"):
            fm = fusion["metrics"]["fused"]
            click.echo(  # fit on dev, so in-sample there (three parameters: docs/benchmarks.md checks it out of fold)
                f"re-ranking score (cross-encoder+twin, fit on dev): AP {fm['ap']:.4f}, best F1 "
                f"{fm['best_f1']:.4f}; threshold {fusion['threshold']:.4f}"
            )
    else:
        trained = ((result.selection or {}).get("reranker") or {}).get("trained")
        click.echo(f"cross-encoder: {'removed' if trained else 'not trained'} (rerank is unavailable for this "
                   "version)")
    for line in selection_lines(result.selection):
        click.echo(line)
    click.echo("time per phase: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.phase_seconds.items()))
    if result.budget and (result.budget["cut"] or result.budget.get("twin_stopped_at")):
        b = result.budget
        twin = b.get("twin_stopped_at") or b["twin_steps"]  # the deadline may have stopped it before its plan
        click.echo(f"time budget {b['budget_s'] / 60:g} min: trained {b['cross_steps']} of {b['cross_full_steps']} "
                   f"cross-encoder steps and {twin} of {b['twin_full_steps']} twin steps (the full recipe "
                   f"was predicted at {b['predicted_full_s'] / 60:.1f} min on this machine; --time-budget 0 trains it)")
    if promote:
        svc.promote(version, progress=progress)
        svc.audit(cli_actor(), "model.promote", version)
        click.echo(f"promoted {version}: it now answers searches")
    else:
        click.echo(f"not promoted; serve it with: dupq models promote {version}")




@main.command("eval")
@click.argument("pairs", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--beir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A BEIR-style folder (corpus.tsv, queries.tsv, qrels.tsv) instead of a pair file.")
@click.option("--model", "version", help="Version name or version folder (default: the current version).")
@click.option("--baselines", is_flag=True, help="Add BM25 and the untuned base model to the table.")
@click.option("--rerank", is_flag=True,
              help="Score the PAIRS with the version's re-ranking score (its cross-encoder, fused with the twin's "
                   "score when the version has a fusion) instead of the twin alone (pair metrics).")
@click.option("--runtime", is_flag=True,
              help="Score with the serving runtime at the precision it would serve (inference_precision, the "
                   "version's int8 check, the CPU) instead of the best float precision.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable results.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write an HTML report with plots (PR curve, score histograms, training curves, versions).")
@click.pass_context
@handle_errors
def eval_(ctx: click.Context, pairs: Path | None, beir: Path | None, version: str | None, baselines: bool,
          rerank: bool, as_json: bool, report: Path | None = None, runtime: bool = False) -> None:
    """Evaluate a model on labelled PAIRS (pair + retrieval metrics) or on a --beir folder (retrieval).

    The encoder runs on the home's backend in the best float precision of the CPU (bf16 where native, else
    fp32); --runtime scores it at the precision it serves in (int8 where its check passed and the
    inference_precision setting allows it)."""
    from dupq import evaluation as ev
    from dupq.data import read_pairs
    from dupq.models.cross import CROSS_DIR, CrossScorer, has_cross
    from dupq.models.encoder import SiameseEncoder

    if (pairs is None) == (beir is None):
        raise click.UsageError("give either a PAIRS file or --beir DIR")
    if rerank and not pairs:
        raise click.UsageError("--rerank scores labelled PAIRS; it does not apply to --beir")
    data = read_pairs(pairs).pairs if pairs else ev.load_beir(beir)
    if version and (Path(version) / "dupq.json").is_file():
        name, enc, folder = Path(version).name, SiameseEncoder.load(version), Path(version)
        versions = []
    else:
        with _open_for_reading(ctx) as svc:
            name = version or svc.version
            enc = svc.load_version(name)
            folder = svc.version_path(name)
            versions = _version_configs(svc) if report else []
    enc.set_precision(ctx.obj.inference_precision if runtime else None)
    precision, why = enc.serving_precision
    if runtime and not as_json:
        click.echo(f"model {name}: {why}", err=True)
    if rerank:
        if not has_cross(folder):
            raise click.ClickException(f"model {name!r} has no cross-encoder (train it with the cross-encoder on)")
        cross = CrossScorer.load(folder / CROSS_DIR, backend=enc.backend,
                                 precision=ctx.obj.inference_precision if runtime else None)
        precision, why = cross.serving_precision
        fused = cross.fusion is not None  # the twin's scores are one of the fusion's inputs
        twin = ev.pair_scores(enc.encode, data, energy=enc.energy_name) if fused else [0.0] * len(data)
        scores = cross.rerank([(p.question1, p.question2) for p in data], twin, batch_size=64)
        metrics = ev.pair_metrics(scores, [p.label for p in data], threshold=cross.rerank_threshold)
        results = {name: {"scorer": cross.scorer, "pairs": metrics}}
        if baselines:
            results["BM25"] = ev.evaluate_bm25(data)
        if as_json:
            click.echo(json.dumps({"data": str(pairs), "model": name, "precision": precision, "results": results},
                                  indent=2))
            return
        click.echo(ev.format_results(results))
        return
    models = {name: enc}
    if baselines and "training" in enc.metadata:  # an untuned version is the base model already
        models["base (untuned)"] = SiameseEncoder.from_pretrained(backend=enc.backend)  # same runtime as the model

    from dupq.evaluation.plots import PairScoreRecorder

    recorder = PairScoreRecorder(enc.encode) if report and pairs else None  # keeps the vectors for the report

    def run(e: SiameseEncoder) -> dict[str, Any]:
        if pairs:
            encode = recorder if recorder is not None and e is enc else e.encode
            return ev.evaluate_encoder(encode, data, energy=e.energy_name, threshold=e.threshold)
        return ev.evaluate_encoder_on_task(e.encode, data, energy=e.energy_name)

    results = {label: run(e) for label, e in models.items()}
    if baselines:
        results["BM25"] = ev.evaluate_bm25(data) if pairs else ev.evaluate_bm25_on_task(data)
    if report:
        from dupq.evaluation.plots import write_eval_report

        write_eval_report(report, versions, data_name=str(pairs or beir), model=name, encoder=enc, results=results,
                          table=ev.format_results(results), pairs=data if pairs else None, recorder=recorder)
        click.echo(f"report: {report}", err=True)
    if as_json:
        click.echo(json.dumps({"data": str(pairs or beir), "model": name, "precision": precision,
                               "precision_reason": why, "results": results}, indent=2))
        return
    click.echo(ev.format_results(results))


@main.group()
def models() -> None:
    """Model versions: list, promote, roll back."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable output.")
@click.pass_context
@handle_errors
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Show the model versions with their dev metrics; * marks the current one."""
    with _open_for_reading(ctx) as svc:
        versions = svc.versions()
        for v in versions:  # the operating point the threshold was calibrated for (dupq.json; older: max_f1)
            if "threshold_policy" not in v:
                try:
                    v["threshold_policy"] = svc.version_config(v["version"]).get("threshold_policy")
                except (FileNotFoundError, OSError, ValueError):
                    v["threshold_policy"] = None
    if as_json:
        click.echo(json.dumps(versions, indent=2))
        return
    click.echo(f"  {'version':<20} {'parent':<20} {'energy':<9} {'threshold':>9} {'dev AP':>7} {'nDCG@10':>7}  "
               f"{'policy':<14} {'serves':<6} {'int8 check':<28} created")
    for v in versions:
        dev = v["metrics"].get("dev", {})
        ap = dev.get("pairs", {}).get("ap")
        ndcg = dev.get("retrieval", {}).get("ndcg@10")
        threshold = v["threshold"]
        policy = v.get("threshold_policy") or ("max_f1" if v["metrics"] else "-")
        click.echo(
            f"{'*' if v['current'] else ' '} {v['version']:<20} {v['parent'] or '-':<20} {v['energy'] or '-':<9} "
            f"{'-' if threshold is None else f'{threshold:.4f}':>9} {'-' if ap is None else f'{ap:.4f}':>7} "
            f"{'-' if ndcg is None else f'{ndcg:.4f}':>7}  {policy:<14} {v.get('precision') or '-':<6} "
            f"{_int8_check(v.get('int8')):<28} {v['created_at']}"
        )


def _int8_check(record: dict[str, Any] | None) -> str:
    """The int8 check of ``models list``: the decision and the AP / nDCG@10 change it was made on."""
    if not record:
        return "not checked"
    fp32, int8 = record.get("fp32"), record.get("int8")
    if not fp32 or not int8:
        return "too few dev pairs" if "too few" in str(record.get("reason")) else "failed"
    return (f"{'passed' if record.get('decision') == 'int8' else 'FAILED'} AP {(int8['ap'] - fp32['ap']) * 100:+.2f} "
            f"nDCG {(int8['ndcg@10'] - fp32['ndcg@10']) * 100:+.2f}")


@models.command("quantize")
@click.argument("version")
@click.option("--pairs", "pairs", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labelled dev pairs (both labels) the int8 model is checked on against fp32.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Questions to calibrate on (a question file; default: a sample of the stored questions).")
@click.option("--subset-size", type=click.IntRange(1, 100_000), default=None,
              help="Calibration questions used (default 300).")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=None,
              help="Largest drop of dev AP and of nDCG@10 int8 may cost (default 0.003 = 0.3 points).")
@click.option("--smooth-quant-alpha", type=float, default=None,
              help="SmoothQuant alpha of the MatMuls (default: NNCF's for transformers; negative: off).")
@click.option("--json", "as_json", is_flag=True, help="Print the record written into dupq.json.")
@click.pass_context
@handle_errors
def models_quantize(ctx: click.Context, version: str, pairs: Path, calibration: Path | None, subset_size: int | None,
                    tolerance: float | None, smooth_quant_alpha: float | None, as_json: bool) -> None:
    """Quantise VERSION to static int8 and check it against fp32 on the dev PAIRS; it serves in int8
    (inference_precision auto) only if its dev AP and nDCG@10 each stay within 0.3 points."""
    from dupq.data import iter_questions, read_pairs

    dev = read_pairs(pairs).pairs
    texts = [q.text for q in iter_questions(calibration) if q is not None] if calibration else None
    with open_service(ctx) as svc:
        record = svc.quantize_version(version, dev, calibration=texts, tolerance=tolerance, subset_size=subset_size,
                                      smooth_quant_alpha=smooth_quant_alpha, dev_name=pairs.name)
        precision, why = svc.serving_precision(version)
    if as_json:
        click.echo(json.dumps({"version": version, "int8": record, "precision": precision, "precision_reason": why},
                              indent=2))
        return
    fp32, int8 = record["fp32"], record["int8"]
    click.echo(f"{version}: dev AP fp32 {fp32['ap']:.4f} int8 {int8['ap']:.4f}; "
               f"nDCG@10 fp32 {fp32['ndcg@10']:.4f} int8 {int8['ndcg@10']:.4f} ({record['dev']['pairs']} pairs)")
    click.echo(f"decision: {record['decision']} ({record['reason']})")
    if record.get("cross"):
        click.echo(f"re-ranker: {record['cross']['decision']} ({record['cross']['reason']})")
    click.echo(f"serves in: {precision} ({why}); the index keeps the vectors it has (dupq reindex re-embeds them)")


@models.command("promote")
@click.argument("version")
@click.option("--progress/--no-progress", default=True, help="Show the re-embedding progress bar.")
@click.pass_context
@handle_errors
def models_promote(ctx: click.Context, version: str, progress: bool) -> None:
    """Make VERSION current, after embedding every stored question with it."""
    with open_service(ctx) as svc:
        svc.promote(version, progress=progress)
        svc.audit(cli_actor(), "model.promote", version)
        click.echo(f"current model: {svc.version}")


@models.command("rollback")
@click.option("--progress/--no-progress", default=True, help="Show the re-embedding progress bar.")
@click.pass_context
@handle_errors
def models_rollback(ctx: click.Context, progress: bool) -> None:
    """Serve the version that was current before this one again."""
    with open_service(ctx) as svc:
        target = svc.rollback(progress=progress)
        svc.audit(cli_actor(), "model.rollback", target)
        click.echo(f"rolled back; current model: {target}")


def _backup_summary(r: dict[str, Any]) -> str:
    c = r["counts"]
    return (f"{c['questions']} questions, {c['pairs']} pairs, {c['jobs']} jobs, {len(r['versions'])} model versions "
            f"(current {r['current_model']}), store revision {r['revision']}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the archive's manifest as JSON.")
@click.pass_context
@handle_errors
def backup(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Write one archive of the home (or --database) to FILE, consistently, while the service runs.

    FILE must not exist; a name ending in .gz or .tgz is gzip-compressed. The archive holds the questions,
    labelled pairs, jobs history, model versions with their exports and the current pointer (and, for a
    SQLite home, the vector indexes, so that a restored home answers exactly as this one). docs/operations.md.
    """
    from dupq.backup import backup as run_backup

    r = run_backup(ctx.obj, file)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"backed up {_backup_summary(r)} to {file} ({r['bytes'] / 2**20:.1f} MiB, {r['backend']}, "
               f"format {r['format']}, in {r['seconds']:.1f}s)")
    for note in r["notes"]:
        click.echo(f"note: {note}", err=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--home", "target_home", type=click.Path(file_okay=False, path_type=Path),
              help="Restore into this new or empty folder (a SQLite backup).")
@click.option("--database", "target_url", metavar="URL",
              help="Restore into this empty PostgreSQL database (a PostgreSQL backup).")
@click.option("--check", is_flag=True, help="Only print what FILE holds (its manifest); restore nothing.")
@click.pass_context
@handle_errors
def restore(ctx: click.Context, file: Path, target_home: Path | None, target_url: str | None, check: bool) -> None:
    """Restore the backup FILE into a new home (--home DIR) or an empty database (--database URL).

    A non-empty target is refused, as are archives that are damaged, truncated, of the other backend or of a
    newer format; nothing is written then. An older store is upgraded by this dupq's migrations.
    """
    import dataclasses

    from dupq.backup import describe
    from dupq.backup import restore as run_restore

    if check:
        click.echo(json.dumps(describe(file), indent=2))
        return
    if target_home is not None and target_url is not None:
        raise click.UsageError("restore into --home DIR or --database URL, not both")
    settings = ctx.obj
    if target_url is not None:
        settings = dataclasses.replace(settings, database_url=target_url)
    elif target_home is not None:
        settings = dataclasses.replace(settings, home=target_home, database_url=None)
    r = run_restore(file, settings)
    click.echo(f"restored {_backup_summary(r)} into {r['target']} (backup of {r['created_at']}, dupq "
               f"{r['dupq_version']}, schema {r['schema_version']} -> {r['restored_schema']}, in {r['seconds']:.1f}s)")


@main.group()
def keys() -> None:
    """API keys with scopes: search < write < moderate < admin (each allows what the lower ones do)."""


@keys.command("create")
@click.option("--name", required=True, help="The key's name: what the audit log and `keys revoke` call it.")
@click.option("--scope", required=True, type=click.Choice(["search", "write", "moderate", "admin"]),
              help="search: search; write: + add questions and pairs; moderate: + review queue, close, delete; "
              "admin: + train, promote, the admin page, the audit log.")
@click.option("--origin", "origins", multiple=True, metavar="ORIGIN",
              help="Only from this browser origin (e.g. https://forum.example; repeat for several; default: any), "
              "checked against the request's Origin header when it has one.")
@click.option("--rate-limit", help="This key's own limit of API requests, all its clients together (e.g. 100/minute; "
              "default: the rate_limit_key setting).")
@click.pass_context
@handle_errors
def keys_create(ctx: click.Context, name: str, scope: str, origins: tuple[str, ...], rate_limit: str | None) -> None:
    """Create a key and print it, once, alone on the last line (only a hash of it is stored)."""
    from dupq.access import Access

    with Access.open(ctx.obj) as access:
        key, token = access.create_key(name, scope, actor=cli_actor(), origins=origins, rate_limit=rate_limit)
    click.echo(f"created key {key.name!r} (scope {key.scope}"
               + (f", origins {', '.join(key.origins)}" if key.origins else "")
               + (f", rate limit {key.rate_limit}" if key.rate_limit else "")
               + "); it is shown once, store it now:", err=True)
    click.echo(token)


@keys.command("list")
@click.option("--all", "show_all", is_flag=True, help="Revoked keys too.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable output.")
@click.pass_context
@handle_errors
def keys_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List the keys (never a secret): name, scope, origins, rate limit, created, revoked."""
    from dupq.access import Access

    with Access.open(ctx.obj) as access:
        found = [k for k in access.list_keys() if show_all or k.active]
        token_set = ctx.obj.admin_token is not None
    if as_json:
        click.echo(json.dumps([k.to_dict() for k in found], indent=2))
        return
    click.echo(f"{'name':<24} {'scope':<9} {'origins':<32} {'rate limit':<12} {'created':<26} revoked")
    for k in found:
        click.echo(f"{k.name:<24} {k.scope:<9} {', '.join(k.origins) or 'any':<32} {k.rate_limit or '-':<12} "
                   f"{k.created_at:<26} {k.revoked_at or '-'}")
    if token_set:
        click.echo("(DUPQ_ADMIN_TOKEN is set: it is the admin key named admin-token)")


@keys.command("revoke")
@click.argument("name")
@click.pass_context
@handle_errors
def keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke the key NAME: refused from the next request on, on every node; its signed-in sessions end."""
    from dupq.access import Access

    with Access.open(ctx.obj) as access:
        key = access.revoke_key(name, actor=cli_actor())
    click.echo(f"revoked key {key.name!r} (scope {key.scope}) at {key.revoked_at}")


@main.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500), help="How many entries.")
@click.option("--before", type=click.IntRange(1), help="Only entries older than this entry id (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable output.")
@click.pass_context
@handle_errors
def audit(ctx: click.Context, limit: int, before: int | None, as_json: bool) -> None:
    """The audit log of moderation and admin actions, newest first: when, which key, what, on which object."""
    from dupq.access import Access

    with Access.open(ctx.obj) as access:
        entries = access.audit_log(limit, before)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    for e in entries:
        click.echo(f"{e.id:>6}  {e.at}  {e.key:<20} {e.action:<16} {e.object}")


@main.group()
def db() -> None:
    """The PostgreSQL backend: an embedded server for development, the schema."""


@db.command("start")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dupq-pg"),
              show_default=True, help="The cluster's folder (initialised on first use).")
def db_start(data_dir: Path) -> None:
    """Start an embedded PostgreSQL with pgvector, print its URL and serve until interrupted (Ctrl-C).

    Use the URL as DUPQ_DATABASE_URL or --database for every node.
    """
    import time

    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.embedded import EmbeddedUnavailable, start

    try:
        server, url = start(data_dir)
    except EmbeddedUnavailable as e:
        raise click.ClickException(str(e)) from None
    Database(url, max_size=1).close()  # the schema, migrated once
    click.echo(url)
    click.echo(f"embedded PostgreSQL (pid {server.get_pid()}) in {data_dir.resolve()}; Ctrl-C stops it", err=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)


@db.command("migrate")
@click.pass_context
@handle_errors
def db_migrate(ctx: click.Context) -> None:
    """Apply the schema migrations the database lacks and print its schema version."""
    from dupq.storage.postgres.db import Database

    if not ctx.obj.database_url:
        raise click.UsageError("no database: set DUPQ_DATABASE_URL or pass --database URL")
    d = Database(ctx.obj.database_url, max_size=1)
    try:
        click.echo(f"schema version {d.schema_version()}")
    finally:
        d.close()


if __name__ == "__main__":
    main()
