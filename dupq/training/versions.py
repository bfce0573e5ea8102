"""A new model version from labelled pairs: the one path to a version, for `dupq train` and the retrain worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dupq.data import Pair
from dupq.errors import NotFoundError
from dupq.storage.registry import ModelRegistry, new_version_name

#: The starting point that means "the version being served".
CURRENT = "current"


def resolve_start(registry: ModelRegistry, start: str) -> str:
    """The version name a run starts from (``"current"`` -> the served version); it must exist."""
    version = registry.current() if start == CURRENT else start
    if not registry.exists(version):
        raise NotFoundError(f"unknown model version {version!r} to start from")
    return version


@dataclass(frozen=True)
class NewVersion:
    """A trained version folder, complete on disk but not registered yet."""

    version: str
    parent: str | None  # None: trained from a SentenceTransformer folder (``dupq train --base PATH``)
    path: Path
    result: Any  # dupq.training.config.TrainResult


def train_new_version(
    registry: ModelRegistry,
    pairs: Sequence[Pair],
    config: Any,
    *,
    start: str = CURRENT,
    base: str | Path | None = None,
    dev_pairs: Sequence[Pair] | None = None,
    positive_only: Sequence[Pair] | None = None,
    sources: Mapping[str, Sequence[Pair]] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_progress_bar: bool = True,
) -> NewVersion:
    """Train a new version from ``start`` into a fresh ``models/<version>/`` folder: the one path to a version.

    Used by ``dupq train`` and by the retrain worker. ``base``, a SentenceTransformer folder, replaces
    ``start`` as the starting weights (the version then has no parent; dupq.json records the folder as its
    ``base_model``). ``sources``: the pairs by source (file) for the per-source checks of the recipe's
    selection (:mod:`dupq.training.selection`). The folder appears complete or not at all
    (:func:`dupq.training.recipe.train`); the caller registers it
    (``registry.register(v.version, parent=v.parent)``) once it wants it listed, or deletes it.
    """
    from dupq.training.recipe import train

    if base is not None:
        base = Path(base).resolve()  # recorded in dupq.json as the base model: absolute
        if not (base / "modules.json").is_file() and not (base / "config.json").is_file():
            raise NotFoundError(f"{base} is not a SentenceTransformer folder (no modules.json / config.json)")
        parent = None
    else:
        parent = resolve_start(registry, start)
    version = new_version_name()
    while registry.path(version).exists():  # names have one-second resolution
        time.sleep(1)
        version = new_version_name()
    result = train(
        pairs,
        config,
        start=base if base is not None else registry.path(parent),
        output_dir=registry.path(version),
        dev_pairs=dev_pairs,
        positive_only=positive_only,
        sources=sources,
        parent=parent,
        progress=progress,
        should_stop=should_stop,
        show_progress_bar=show_progress_bar,
    )
    return NewVersion(version, parent, registry.path(version), result)
