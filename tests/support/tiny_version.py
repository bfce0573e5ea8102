"""One tiny real fine-tune (6 steps of 8 pairs on tests/fixtures/train), made once per test process and copied
into each home that needs a trained version (its dupq.json carries the loss history and the dev score sample)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[1] / "fixtures" / "train"
NAME = "v20260101-000000"


@functools.lru_cache(maxsize=1)
def _trained() -> Path:
    from dupq.data import read_pairs
    from dupq.models.encoder import packaged_model_path
    from dupq.training import TrainConfig, train

    root = Path(tempfile.mkdtemp(prefix="dupq-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    # cross_encoder=True: the version has its re-ranker whatever the selection rule would say of 23 pairs.
    config = TrainConfig(max_steps=6, batch_size=8, learning_rate=1e-4, eval_steps=3, seed=0, bf16=False,
                         cross_encoder=True)
    train(read_pairs(TRAIN / "pairs.tsv").pairs, config, start=packaged_model_path(), output_dir=root / NAME,
          dev_pairs=read_pairs(TRAIN / "dev.tsv").pairs, parent="base", show_progress_bar=False)
    return root / NAME


def install(svc) -> str:
    """Copy the tiny version into ``svc``'s home and register it (not promoted); returns its name."""
    dest = svc.registry.path(NAME)
    if not dest.exists():
        shutil.copytree(_trained(), dest, ignore=shutil.ignore_patterns("openvino"))
    svc.registry.register(NAME, parent="base")
    return NAME
