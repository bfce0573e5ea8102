"""The retrain lifecycle without a model: the job state table, claims, requests and the evaluation gate."""

from __future__ import annotations

import pytest

from dupq.errors import ValidationError
from dupq.evaluation.gate import gate_decision
from dupq.retrain import RetrainRequest
from dupq.storage.jobs import ACTIVE, TERMINAL, TRANSITIONS, IllegalTransition, can_move
from dupq.storage.sqlite.jobs import JobStore
from dupq.storage.sqlite.store import QuestionStore


@pytest.fixture
def jobs() -> JobStore:
    return JobStore(QuestionStore(":memory:"))


def test_table_shape() -> None:
    assert set(ACTIVE) == set(TRANSITIONS) and not set(ACTIVE) & set(TERMINAL)
    for state, targets in TRANSITIONS.items():
        assert "failed" in targets, state  # anything active can fail
    assert not can_move("ready", "cancelled")  # only the switch is left: it is not cancelled half-way


def test_happy_path(jobs: JobStore) -> None:
    job = jobs.create({"max_steps": 1})
    assert jobs.claim(job.id, pid=42).state == "running"
    for state in ("evaluating", "indexing", "ready", "promoted"):
        assert jobs.transition(job.id, state).state == state
    assert jobs.get(job.id).pid == 42


@pytest.mark.parametrize(
    "path, illegal",
    [
        ((), "evaluating"),  # queued cannot skip training
        (("running",), "indexing"),  # the gate cannot be skipped
        (("running", "evaluating"), "promoted"),  # only a ready candidate is promoted
        (("running", "evaluating", "rejected"), "failed"),  # a final state is final
        (("cancelled",), "running"),
    ],
)
def test_illegal_moves_are_refused(jobs: JobStore, path: tuple[str, ...], illegal: str) -> None:
    job = jobs.create({})
    for state in path:
        jobs.transition(job.id, state)
    before = jobs.get(job.id)
    with pytest.raises(IllegalTransition):
        jobs.transition(job.id, illegal)
    assert jobs.get(job.id).state == before.state


def test_update_never_moves_state_and_stops_at_the_end(jobs: JobStore) -> None:
    job = jobs.create({})
    with pytest.raises(ValueError):
        jobs.update(job.id, state="running")
    jobs.update(job.id, progress={"step": 1})
    assert jobs.get(job.id).progress == {"step": 1}
    jobs.transition(job.id, "failed", error="x")
    jobs.update(job.id, progress={"step": 2})  # a final record is not written any more
    assert jobs.get(job.id).progress == {"step": 1}


def test_claim_only_a_queued_job_once(jobs: JobStore) -> None:
    job = jobs.create({})
    assert jobs.claim(job.id, pid=1) is not None
    assert jobs.claim(job.id, pid=2) is None
    with pytest.raises(Exception, match="still active"):  # one active job at a time
        jobs.create({})


def test_cancel_queued_and_cancel_ended(jobs: JobStore) -> None:
    job = jobs.create({})
    assert jobs.request_cancel(job.id).state == "cancelled"
    assert jobs.claim(job.id, pid=1) is None
    with pytest.raises(Exception, match="can no longer be cancelled"):
        jobs.request_cancel(job.id)


def test_request_validation() -> None:
    req = RetrainRequest.from_options({"max_steps": 5, "from": "base"})
    assert req.start == "base" and req.config.max_steps == 5
    assert RetrainRequest.from_options(None).start == "current"
    stored = req.to_dict()
    assert stored["margin"] == req.config.margin  # resolved defaults are stored, not re-derived later
    with pytest.raises(ValidationError, match="unknown training option"):
        RetrainRequest.from_options({"base": "packaged"})
    with pytest.raises(ValidationError):
        RetrainRequest.from_options({"from": 3})
    with pytest.raises(ValidationError):
        RetrainRequest.from_options({"learning_rate": -1})


def _report(cand: float, cur: float) -> dict:
    return {"candidate": {"pairs": {"ap": cand}}, "current": {"pairs": {"ap": cur}}}


def test_gate_decision() -> None:
    assert gate_decision({"a": _report(0.80, 0.80)}, 0.0)[0]
    assert gate_decision({"a": _report(0.796, 0.80)}, 0.005)[0]
    ok, why = gate_decision({"a": _report(0.90, 0.80), "b": _report(0.70, 0.80)}, 0.005)
    assert not ok and why.startswith("b:")  # every report must pass
    assert not gate_decision({"a": {"skipped": "one label"}}, 1.0)[0]
    assert gate_decision({"a": {"skipped": "x"}, "b": _report(0.8, 0.8)}, 0.0)[0]
