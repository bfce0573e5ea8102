"""The options of one fine-tuning run (:class:`TrainConfig`, validated once) and what it produced."""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from dupq.evaluation.metrics import parse_threshold_policy
from dupq.models.energy import Energy

#: Default contrastive margin per energy name (:attr:`dupq.models.energy.Energy.default_margin`, where it is decided).
DEFAULT_MARGIN = {name: Energy.from_name(name).default_margin for name in Energy.names()}


#: Default margin of ``online-contrastive`` per energy: 0.5 in cosine distance (the issue-10 research, the
#: plain recipe's value), the same pair geometry in Euclidean distance (``sqrt(2 * 0.5)`` on unit vectors).
ONLINE_MARGIN = {"cosine": 0.5, "euclidean": math.sqrt(2 * 0.5)}

#: Loss names of the labelled pairs (:func:`dupq.training.losses.build_loss`).
LOSSES = ("contrastive", "online-contrastive")
#: Losses of the positive-only pairs (:func:`dupq.training.losses.build_ranking_loss`); "none" sends them to the
#: contrastive loss.
RANKING_LOSSES = ("gist", "mnrl", "none")


Progress = Callable[[dict[str, Any]], None]


class TrainingCancelled(Exception):
    """Training stopped because ``should_stop()`` returned True; nothing was written at ``output_dir``."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (validated on construction; JSON-friendly).

    ``loss`` is the contrastive loss of the labelled pairs; ``margin=None`` (the default) resolves to
    ``DEFAULT_MARGIN[energy]`` for ``contrastive`` and ``ONLINE_MARGIN[energy]`` for ``online-contrastive``, so
    after construction ``margin`` is always a float in the units of the energy's distance (cosine distance
    ``1 - cos``, or Euclidean). ``ranking_loss`` is the loss of the positive-only pairs (``"gist"``,
    ``"mnrl"``, or ``"none"``: they join the contrastive loss as positives, the old recipe), of which at most
    ``max_positive_only`` (None: all) are used, a seeded sample. ``negatives_per_positive`` hard negatives are
    mined per positive pair without a labelled negative (0, the default, turns mining off), and with the
    cross-encoder on only those it scores as non-duplicates are kept. ``ranking_weight`` adds an in-batch
    ranking term on the labelled duplicates to the contrastive loss (:mod:`dupq.training.losses`; 0 = none), and
    ``base_weight`` averages that share of the starting weights back into the result (WiSE-FT,
    :func:`average_weights`; 0 = none). ``cross_encoder`` trains the version's cross-encoder (teacher and
    re-ranker) with its own ``cross_epochs`` / ``cross_learning_rate`` on at most ``cross_max_pairs`` labelled
    pairs (a seeded sample; None: all); ``cross_max_steps`` caps its steps (None: ``max_steps``, so a
    ``max_steps`` smoke run stays small for both models). ``silver_pairs`` (0: none) is how many Augmented-SBERT
    silver pairs the cross-encoder labels among the training questions' nearest neighbours
    (:func:`dupq.training.mining.neighbour_pairs`) for the contrastive loss. ``bf16`` (default on:
    same dev AP as fp32, faster; docs/benchmarks.md) is ignored where the hardware has no native bf16.
    ``time_budget_minutes`` (None: none) bounds the wall time of :func:`train`: on a machine too slow for the
    full recipe in that time it trains fewer steps, the cross-encoder first (:mod:`dupq.training.budget`); with 40
    minutes the recommended command took 40 on a 2-core AVX2-only CPU (55 without). The fixed defaults
    are each from a measured run (docs/training.md, docs/benchmarks.md "Why the defaults": online-contrastive
    m 0.5 + GIST on 10,000 positive-only pairs at lr 5e-5 was the best dev AP). The options left ``None`` by
    default are chosen on the dev pairs by the rule
    of :mod:`dupq.training.selection` (issue 24): ``epochs`` (at least 300 steps, early stopping),
    ``base_weight`` (among 0, 0.25, 0.5: best dev AP with dev nDCG@10, and each source's, not below the
    starting model's), ``cross_encoder`` (trained from 5,000 labelled pairs, kept only if it beats the twin out
    of fold) and ``dev_fraction``; ``threshold_policy`` is the operating point the served threshold is
    calibrated for on dev (``max_f1``, ``precision:P``, ``recall:R``).

    Example:
        >>> c = TrainConfig(max_steps=200, energy="euclidean", loss="contrastive")
        >>> round(c.margin, 3), TrainConfig.from_dict(c.to_dict()) == c
        (1.183, True)
        >>> TrainConfig().margin, TrainConfig().ranking_loss
        (0.5, 'gist')
    """

    loss: str = field(default="online-contrastive",
                      metadata={"help": "Contrastive loss of the labelled pairs.", "choices": LOSSES})
    margin: float | None = field(default=None, metadata={
        "help": "Contrastive margin, in the energy's distance.", "gt": 0, "none": "per energy and loss"})
    energy: str = field(default=Energy.COSINE.name, metadata={
        "help": "Energy: the distance the twin is trained on and search ranks by.", "choices": Energy.names()})
    epochs: float | None = field(default=None, metadata={
        "help": "Passes over the training pairs; the best dev checkpoint is kept and training stops when dev AP "
                "stops improving.", "gt": 0,
        "none": "auto: enough passes for 300 optimiser steps (at most 40), 1 on big data"})
    max_steps: int | None = field(default=None, metadata={
        "help": "Optimiser steps; overrides the epochs.", "ge": 1, "none": "from the epochs"})
    batch_size: int = field(default=32, metadata={"help": "Pairs per step (per process).", "ge": 1})
    learning_rate: float = field(default=5e-5, metadata={
        "help": "Peak learning rate.", "gt": 0, "cli": ("--learning-rate", "--lr")})
    warmup_ratio: float = field(default=0.1, metadata={
        "help": "Share of the steps over which the learning rate warms up.", "ge": 0, "lt": 1})
    seed: int = field(default=0, metadata={"help": "Random seed.", "ge": 0})
    ranking_loss: str = field(default="gist", metadata={
        "help": "Loss of the positive-only pairs (none: they join the contrastive loss).",
        "choices": RANKING_LOSSES})
    max_positive_only: int | None = field(default=10_000, metadata={
        "help": "Most positive-only pairs used (a seeded sample).", "ge": 0, "none": "all"})
    negatives_per_positive: float = field(default=0.0, metadata={
        "help": "Hard negatives mined per positive pair without a labelled negative, filtered by the "
                "cross-encoder (0: no mining).", "ge": 0})
    ranking_weight: float = field(default=0.0, metadata={
        "help": "Weight of the in-batch ranking term added to the contrastive loss (0: contrastive only).",
        "ge": 0})
    base_weight: float | None = field(default=None, metadata={
        "help": "Share of the starting weights averaged back into the result (WiSE-FT; 0: none).",
        "ge": 0, "lt": 1,
        "none": "chosen on dev among 0, 0.25, 0.5: best dev AP with dev nDCG@10 (each source's) not below the "
                "starting model's"})
    cross_encoder: bool | None = field(default=None, metadata={
        "help": "Train the version's cross-encoder (teacher and re-ranker) and keep it.",
        "none": "auto: trained from 5,000 labelled training pairs, kept only if it beats the twin out of fold on "
                "dev"})
    refit: bool | None = field(default=None, metadata={
        "help": "Once the steps, WiSE-FT weight and threshold are chosen on dev, train the twin again from the "
                "starting weights on train + dev (the recorded dev metrics stay the selection run's).",
        "none": "auto: when dupq split dev from fewer than 5,000 labelled pairs"})
    cross_epochs: float = field(default=2.0, metadata={
        "help": "Cross-encoder passes over the labelled pairs.", "gt": 0})
    cross_both_orders: bool = field(default=True, metadata={
        "help": "Train the cross-encoder on each labelled pair in both orders (it reads a pair as one sequence, "
                "so (a, b) and (b, a) are different inputs).",
        "cli": "--cross-both-orders/--cross-one-order"})
    cross_learning_rate: float = field(default=5e-5, metadata={
        "help": "Cross-encoder peak learning rate.", "gt": 0})
    cross_max_steps: int | None = field(default=None, metadata={
        "help": "Cross-encoder optimiser steps.", "ge": 1, "none": "as max_steps"})
    cross_max_pairs: int | None = field(default=40_000, metadata={
        "help": "Most labelled pairs the cross-encoder trains on (a seeded sample).", "ge": 1, "none": "all"})
    silver_pairs: int = field(default=0, metadata={
        "help": "Augmented-SBERT pairs the cross-encoder labels among near neighbours (0: none).", "ge": 0})
    bf16: bool = field(default=True, metadata={
        "help": "Mixed precision (bf16; ignored where the hardware has no native bf16).",
        "cli": "--bf16/--fp32"})
    eval_steps: int | None = field(default=None, metadata={
        "help": "Steps between dev evaluations (checkpoint selection).", "ge": 1, "none": "4 per run"})
    dev_fraction: float | None = field(default=None, metadata={
        "help": "Share of the duplicate clusters held out as dev pairs when no dev pairs are given.",
        "gt": 0, "lt": 1, "none": "auto: 300 pairs' worth, between 0.1 and 0.3"})
    threshold_policy: str = field(default="max_f1", metadata={
        "help": "Operating point the served threshold is calibrated for on dev: max_f1, precision:P (the most "
                "recall at precision >= P) or recall:R (the most precision at recall >= R).",
        # P and R in (0, 1]: a decimal fraction with a non-zero digit, or 1. Narrower than the CLI's parser
        # (which also takes "f1", upper case, exponents), never wider.
        "pattern": r"^(max_f1|(precision|recall):(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?))$"})
    int8: bool = field(default=True, metadata={
        "help": "After training, quantise the version to static int8 and serve it in int8 only if its dev AP and "
                "nDCG@10 each stay within 0.3 points of fp32 (dupq.json's int8 record says why either way).",
        "cli": "--int8/--no-int8"})
    time_budget_minutes: float | None = field(default=40.0, metadata={
        "help": "Minutes the training may take. On a machine too slow for the full recipe in that time, fewer "
                "steps are trained (the cross-encoder's first), and the run says so.",
        "gt": 0, "none": "no budget", "cli": "--time-budget", "cli_none": 0})

    def __post_init__(self) -> None:
        energy = Energy.from_name(self.energy)  # ValueError for an unknown name
        self.energy = energy.name  # the name: the config is saved as JSON in dupq.json
        if self.margin is None:
            self.margin = energy.default_margin if self.loss == "contrastive" else ONLINE_MARGIN[energy.name]
        for option in options():  # each field's type, choices and bounds, as its declaration states them
            _check(self, option)
        parse_threshold_policy(self.threshold_policy)  # ValueError for anything but the three forms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (a typo must not silently fall back to a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(data))


def _number(cfg: TrainConfig, name: str, *, low: float, high: float | None = None, low_open: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value >= high):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}" + (f" and < {high}" if high is not None else "") + f", got {value}")
    setattr(cfg, name, float(value))


def _integer(cfg: TrainConfig, name: str, *, low: int | None = None) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise ValueError(f"{name} must be an integer" + (f" >= {low}" if low is not None else "") + f", got {value!r}")


# -- the declaration read back: the CLI (``dupq train``) and the API (``TrainRequest``) are made from it -------
@dataclass(frozen=True)
class Option:
    """One :class:`TrainConfig` field as its declaration states it: ``field(default=..., metadata={...})``.

    The metadata keys: ``help`` (one or two sentences; the default is added by whoever shows it), ``choices``
    (the strings it takes), ``gt`` / ``ge`` / ``lt`` (bounds of a number), ``none`` (what ``None`` means, for a
    field whose annotation allows it or whose default is ``None``), ``cli`` (the ``dupq train`` flag(s), default
    ``--name-with-dashes``, ``--x/--no-x`` for a bool), ``cli_none`` (the flag value that stands for ``None``) and
    ``pattern`` (a regular expression every string the API documents must match: each match is a value
    ``TrainConfig`` accepts, so the OpenAPI document never promises what validation then refuses).
    """

    name: str
    default: Any
    #: The annotation's types, ``float | None`` -> ``(float, NoneType)``; a ``Literal`` member is ``str`` + choices.
    types: tuple[Any, ...]
    help: str
    choices: tuple[str, ...] = ()
    bounds: Mapping[str, float] = field(default_factory=dict)
    none: str | None = None
    cli: tuple[str, ...] = ()
    cli_none: Any = None
    pattern: str | None = None

    @property
    def nullable(self) -> bool:
        return type(None) in self.types

    def described(self, note: str) -> str:
        """The help with ``note`` (the default, what null means) in its closing parentheses.

        Example:
            >>> Option("batch_size", 32, (int,), "Pairs per step (per process).").described("default 32")
            'Pairs per step (per process; default 32).'
        """
        text = self.help.rstrip(".")
        return f"{text[:-1]}; {note})." if text.endswith(")") else f"{text} ({note})."


@functools.cache
def options() -> tuple[Option, ...]:
    """Every :class:`TrainConfig` field as an :class:`Option`, in declaration order.

    Example:
        >>> lr = next(o for o in options() if o.name == "learning_rate")
        >>> lr.default, lr.types, dict(lr.bounds), lr.cli
        (5e-05, (<class 'float'>,), {'gt': 0}, ('--learning-rate', '--lr'))
    """
    hints = get_type_hints(TrainConfig)
    out = []
    for f in fields(TrainConfig):
        meta = f.metadata
        members = get_args(hints[f.name]) if get_origin(hints[f.name]) in (Union, types.UnionType) else (
            hints[f.name],)
        literal = tuple(a for m in members if get_origin(m) is Literal for a in get_args(m))
        kinds = tuple(dict.fromkeys(str if get_origin(m) is Literal else m for m in members))
        cli = meta.get("cli") or (f"--{f.name.replace('_', '-')}" + (
            f"/--no-{f.name.replace('_', '-')}" if bool in kinds else ""))
        out.append(Option(
            name=f.name,
            default=f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else None),
            types=kinds,
            help=meta.get("help", ""),
            choices=tuple(meta.get("choices", ())) + literal,
            bounds={k: meta[k] for k in ("gt", "ge", "lt") if k in meta},
            none=meta.get("none"),
            cli=(cli,) if isinstance(cli, str) else tuple(cli),
            cli_none=meta.get("cli_none"),
            pattern=meta.get("pattern"),
        ))
    return tuple(out)


def _check(cfg: TrainConfig, option: Option) -> None:
    """``option``'s value in ``cfg`` against its declaration (numbers become floats where a float is declared)."""
    name, value, bounds = option.name, getattr(cfg, option.name), option.bounds
    if (value is None and option.nullable) or (isinstance(value, str) and value in option.choices):
        return
    if bool in option.types:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif float in option.types:
        low = bounds.get("gt", bounds.get("ge", -math.inf))
        high = bounds.get("lt")
        _number(cfg, name, low=float(low), high=None if high is None else float(high), low_open="gt" in bounds)
    elif int in option.types:
        _integer(cfg, name, low=bounds.get("ge"))
    elif option.choices:
        raise ValueError(f"{name} must be one of {option.choices}, got {value!r}")
    elif str in option.types and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")


@dataclass
class TrainResult:
    """What :func:`train` produced: the version folder, its dev metrics, thresholds and data counts."""

    version: str
    path: Path
    metrics: dict[str, Any]
    thresholds: dict[str, float]
    counts: dict[str, int]
    seconds: float
    pairs_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The cross-encoder's ``{"threshold", "metrics", "steps", "seconds", ...}`` (None: not trained).
    cross: dict[str, Any] | None = None
    #: Wall seconds per phase: prepare, budget (the probes), cross_encoder, silver, mining, twin, evaluate, total.
    phase_seconds: dict[str, float] = field(default_factory=dict)
    #: The time budget's plan (:meth:`dupq.training.budget.Plan.to_dict`); None: no budget, or the run surely fit.
    budget: dict[str, Any] | None = None
    #: How the recipe was chosen on dev (:mod:`dupq.training.selection`): dupq.json's ``"selection"``.
    selection: dict[str, Any] | None = None
