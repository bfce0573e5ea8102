"""Progress events of a training run: what train() emits and how a terminal prints them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from dupq.training.config import Progress


def emit(progress: Progress | None, **event: Any) -> None:
    """Send one progress event (``loss`` and ``epoch`` default to None) to ``progress``, if any."""
    if progress is not None:
        event.setdefault("loss", None)
        event.setdefault("epoch", None)
        progress(event)


def phase_printer(config: Any) -> Callable[[dict[str, Any]], None]:
    """A progress callback that prints a line when a training phase starts (the trainers draw the bars)."""
    seen: set[str] = set()
    titles = {
        "budget": "[-] timing a few training steps of each model on this machine (the time budget)",
        "cross-encoder": f"[1/3] cross-encoder: {config.cross_epochs:g} epoch(s) on the labelled pairs"
                         + (" in both orders" if config.cross_both_orders else ""),
        "silver": "[-] silver pairs: the cross-encoder labels near neighbours of the training questions",
        "mining": "[-] mining hard negatives (kept only where the cross-encoder says non-duplicate)",
        "training": f"[2/3] twin encoder: {config.loss} + {config.ranking_loss} ranking loss",
        "evaluating": "[3/3] dev evaluation and threshold calibration",
        "refit": "[-] refit: the chosen recipe trained again on train + dev (small data)",
        "int8": "[-] int8: quantising the version and checking it against fp32 on dev",
    }

    def show(event: dict[str, Any]) -> None:
        phase = event.get("phase")
        if phase == "budget" and event.get("message"):
            print(event["message"], file=sys.stderr, flush=True)
            return
        if phase == "evaluating" and event.get("total") is None:
            return  # an in-training dev evaluation (checkpoint selection), not the final one
        if phase in titles and phase not in seen:
            seen.add(phase)
            print("\n" + titles[phase], file=sys.stderr, flush=True)  # after a progress bar still on its line

    return show
