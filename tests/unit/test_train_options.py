"""The training options are declared once, on :class:`TrainConfig`'s fields: ``dupq train``'s flags and the API's
``TrainRequest`` are made from that declaration, expose exactly its fields and accept what it accepts."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest
from click.testing import CliRunner

from dupq.cli import main, option_help, train_config_options
from dupq.errors import ValidationError
from dupq.training.config import Option, TrainConfig, options
from web import contract

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
#: ``dupq train``'s own parameters: what to train on and how to run it, not training options.
COMMAND_PARAMS = {"pairs", "dev", "start", "base", "promote", "progress", "nproc", "nnodes", "node_rank",
                  "master_addr", "master_port"}


def test_every_field_declares_its_help() -> None:
    # A TrainConfig field is declared as field(default=..., metadata={"help": "...", ...}); the flag's help and the
    # document's description are made from it. A field added without one fails here (and nowhere at import).
    undocumented = [o.name for o in options() if not o.help.strip()]
    assert undocumented == [], f"TrainConfig fields without metadata={{'help': ...}}: {undocumented}"


def test_the_cli_exposes_exactly_the_fields() -> None:
    params = {p.name: p for p in main.commands["train"].params}
    assert set(params) - COMMAND_PARAMS == FIELDS, "a TrainConfig field has no command-line type (dupq.cli)"
    for o in options():
        assert params[o.name].help == option_help(o), o.name
        assert set(o.cli[0].split("/")) <= set(params[o.name].opts + params[o.name].secondary_opts), o.name


def test_the_contract_exposes_exactly_the_fields() -> None:
    declared = {name: f for name, f in contract.TrainRequest.model_fields.items() if name != "from_"}
    assert set(declared) == FIELDS
    for o in options():
        assert declared[o.name].default == o.default and o.help.rstrip(".)") in declared[o.name].description, o.name
    with pytest.raises(ValidationError) as e:
        contract.parse(contract.TrainRequest, {"lerning_rate": 1e-4})
    assert e.value.code == "unknown_field"


def test_help_says_the_default_from_the_field() -> None:
    by_name = {o.name: o for o in options()}
    assert option_help(by_name["learning_rate"]) == "Peak learning rate (default 5e-5)."
    assert option_help(by_name["batch_size"]) == "Pairs per step (per process; default 32)."
    assert option_help(by_name["bf16"]).endswith("; default --bf16).")
    assert "(default per energy and loss)" in option_help(by_name["margin"])
    assert option_help(by_name["time_budget_minutes"]).endswith("(default 40; 0 = no budget).")
    described = Option("x", None, (int, type(None)), "Things (a sample).", none="all").described("null: all")
    assert described == "Things (a sample; null: all)."


@click.command()
@train_config_options
def probe(config_options: dict[str, Any]) -> None:
    click.echo(repr(sorted(config_options.items())))
    TrainConfig(**config_options)


@pytest.mark.parametrize(
    ("args", "given"),
    [
        ([], {}),
        (["--lr", "1e-4"], {"learning_rate": 1e-4}),
        (["--learning-rate", "1e-4"], {"learning_rate": 1e-4}),
        (["--fp32", "--no-cross-encoder"], {"bf16": False, "cross_encoder": False}),
        (["--bf16", "--cross-encoder"], {"bf16": True, "cross_encoder": True}),
        (["--cross-one-order", "--cross-epochs", "1"], {"cross_both_orders": False, "cross_epochs": 1.0}),
        (["--time-budget", "0"], {"time_budget_minutes": None}),  # 0 = no budget
        (["--time-budget", "25"], {"time_budget_minutes": 25.0}),
        (["--loss", "contrastive", "--energy", "euclidean", "--ranking-loss", "mnrl"],
         {"loss": "contrastive", "energy": "euclidean", "ranking_loss": "mnrl"}),
        (["--margin", "0.3", "--epochs", "2", "--max-steps", "3", "--batch-size", "8", "--seed", "1",
          "--max-positive-only", "5", "--negatives-per-positive", "1", "--ranking-weight", "0.5",
          "--base-weight", "0.25", "--cross-epochs", "2", "--silver-pairs", "4"],
         {"margin": 0.3, "epochs": 2.0, "max_steps": 3, "batch_size": 8, "seed": 1, "max_positive_only": 5,
          "negatives_per_positive": 1.0, "ranking_weight": 0.5, "base_weight": 0.25, "cross_epochs": 2.0,
          "silver_pairs": 4}),
    ],
)
def test_flags_reach_train_config(args: list[str], given: dict[str, Any]) -> None:
    r = CliRunner().invoke(probe, args)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == repr(sorted(given.items()))


def _candidates(option: Option) -> list[Any]:
    values: list[Any] = [None, True, False, "nope", 0, 1, -1, 0.5, 2.5, 10**6, *option.choices]
    for bound in option.bounds.values():
        values += [bound - 1, bound - 0.5, bound, bound + 0.5, bound + 1]
    if option.pattern:  # a form (threshold_policy's): what the document's pattern takes, and near misses
        values += ["max_f1", "precision:0.9", "recall:1", "recall:1.0", "precision:.5", "precision:0.05",
                   "precision:0", "precision:0.0", "recall:1.5", "precision:", "f1", "PRECISION:0.9", "recall:-0.5"]
    return values


def _accepts(data: dict[str, Any]) -> bool:
    try:
        TrainConfig(**data)
    except (TypeError, ValueError):
        return False
    return True


@pytest.mark.parametrize("option", options(), ids=lambda o: o.name)
def test_the_contract_accepts_what_train_config_accepts(option: Option) -> None:
    # Both read the same declaration; an explicit check in TrainConfig.__post_init__ that the metadata does not
    # state (so the document accepts what the server then refuses with a 400) shows up here.
    for value in _candidates(option):
        try:
            body = contract.parse(contract.TrainRequest, {option.name: value})
        except ValidationError:
            # A pattern may be narrower than TrainConfig's parser (the CLI takes "f1"); never wider.
            if not option.pattern:
                assert not _accepts({option.name: value}), f"{option.name}={value!r}: TrainConfig takes it, the API not"
        else:
            data = body.model_dump(exclude_unset=True)
            assert _accepts(data), f"{option.name}={value!r}: the API takes it, TrainConfig not"


def test_a_pattern_states_the_form_the_api_takes() -> None:
    policy = next(o for o in options() if o.name == "threshold_policy")
    assert policy.pattern
    schema = contract.TrainRequest.model_json_schema()["properties"]["threshold_policy"]
    assert schema["pattern"] == policy.pattern  # the served document states it
    for good in ("max_f1", "precision:0.9", "recall:1"):
        assert contract.parse(contract.TrainRequest, {"threshold_policy": good})
    for bad in ("precision:0", "recall:2", "nope"):
        with pytest.raises(ValidationError):
            contract.parse(contract.TrainRequest, {"threshold_policy": bad})


def test_the_cross_encoder_reads_each_pair_in_both_orders_by_default() -> None:
    from dupq.data import Pair
    from dupq.training.cross import training_rows

    pairs = [Pair("How do I boil an egg?", "Best way to boil eggs?", 1), Pair("What is a Roth IRA?", "Why?", 0)]
    assert TrainConfig().cross_both_orders
    rows = training_rows(pairs, both_orders=True)
    assert rows == [("How do I boil an egg?", "Best way to boil eggs?", 1), ("What is a Roth IRA?", "Why?", 0),
                    ("Best way to boil eggs?", "How do I boil an egg?", 1), ("Why?", "What is a Roth IRA?", 0)]
    assert training_rows(pairs, both_orders=False) == rows[:2]
