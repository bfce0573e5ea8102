"""The OpenVINO fast path: agreement with torch fp32, the export cache, and when it steps aside.

Tolerances (stated here and in docs/benchmarks.md): on the bundled bank the bf16 OpenVINO embeddings have a
mean cosine >= 0.999 to the fp32 torch ones (measured 0.99999), and the top-ranked other question of each
grouped question is the same for at most 1% of them differing (measured: none).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dupq.bank import bank_groups, load_default_bank
from dupq.config import Settings
from dupq.models.encoder import PACKAGED, SiameseEncoder, load_sentence_transformer, packaged_model_path
from dupq.models.runtime import EXPORT_META, cached_key


@pytest.fixture(scope="module")
def bank() -> list[dict]:
    return load_default_bank()


@pytest.fixture(scope="module")
def torch_enc() -> SiameseEncoder:
    return SiameseEncoder.from_pretrained(backend="torch")


@pytest.fixture(scope="module")
def fast_enc(tmp_path_factory) -> SiameseEncoder:
    enc = SiameseEncoder.from_pretrained(backend="openvino", export_dir=tmp_path_factory.mktemp("m") / "openvino")
    assert enc.runtime is not None, "the OpenVINO backend did not load"
    return enc


def _top_other(emb: np.ndarray) -> np.ndarray:
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def test_fast_path_agrees_with_fp32_on_the_bank(torch_enc, fast_enc, bank) -> None:
    texts = [r["text"] for r in bank]
    ref, fast = torch_enc.encode(texts), fast_enc.encode(texts)
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cos = (ref * fast).sum(1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99, (cos.mean(), cos.min())
    # Same top-ranked other question for the grouped questions (what search answers first).
    grouped = [i for i, r in enumerate(bank) if r["meta"]["group"]]
    changed = int((_top_other(ref)[grouped] != _top_other(fast)[grouped]).sum())
    assert changed <= 0.01 * len(grouped), f"{changed}/{len(grouped)} top-1 answers changed"
    assert len(grouped) == sum(len(g) for g in bank_groups().values())


def test_batching_and_order_do_not_change_vectors(fast_enc) -> None:
    texts = ["short?", "a much longer question about reversing lists in Python without copying them", "mid length q"]
    together = fast_enc.encode(texts, batch_size=2)  # sorted by length inside, rows back in input order
    alone = np.vstack([fast_enc.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-3)  # bf16: padding changes rounding a little
    assert fast_enc.encode([]).shape == (0, fast_enc.dim)


def test_export_is_cached_and_redone_after_a_model_change(tmp_path, fast_enc) -> None:
    import torch

    version = tmp_path / "v1"
    SiameseEncoder(fast_enc.model, threshold=0.5).save(version, weights=PACKAGED)  # like models/base/
    first = SiameseEncoder.load(version, cached=False, backend="openvino")
    text = ["How do I reverse a list in Python?"]
    before = first.encode(text)
    key1 = cached_key(version / "openvino")
    assert key1 and first.runtime is not None and first.runtime.key == key1
    stamp = (version / "openvino" / EXPORT_META).stat().st_mtime_ns

    again = SiameseEncoder.load(version, cached=False, backend="openvino")
    np.testing.assert_allclose(again.encode(text), before, atol=1e-6)
    assert (version / "openvino" / EXPORT_META).stat().st_mtime_ns == stamp  # reused, not exported again

    # A retrain writes new weights into the version: the export must follow them.
    st = load_sentence_transformer(packaged_model_path(), cached=False)
    with torch.no_grad():
        for p in st.parameters():
            p.mul_(0.9)
    SiameseEncoder(st, threshold=0.5).save(version)
    changed = SiameseEncoder.load(version, cached=False, backend="openvino")
    after = changed.encode(text)
    key2 = cached_key(version / "openvino")
    assert key2 != key1 and changed.runtime.key == key2
    assert changed._model is None  # loaded only to export, then released: searches never walk its weights
    reference = SiameseEncoder.load(version, cached=False, backend="torch").encode(text)
    assert float((after * reference).sum()) >= 0.999
    assert float((after * before).sum()) < 0.9999  # really the new weights
    assert json.loads((version / "openvino" / EXPORT_META).read_text())["key"] == key2


def test_weights_changed_in_memory_fall_back_to_torch(tmp_path) -> None:
    import torch

    enc = SiameseEncoder.from_pretrained(cached=False, backend="openvino", export_dir=tmp_path / "openvino")
    assert enc.runtime is not None
    with torch.no_grad():
        next(enc.model.parameters()).mul_(1.01)  # what an optimizer step does
    assert enc.runtime is None  # the export no longer matches the weights
    text = ["Is it better to pay off debt or invest?"]
    expected = enc.model.encode(text, normalize_embeddings=True)
    np.testing.assert_allclose(enc.encode(text), expected, atol=1e-5)


def test_backend_setting_reaches_the_service(tmp_path) -> None:
    from dupq.service import DupQ

    bank = tmp_path / "bank.txt"
    bank.write_text("How do I boil an egg?\nWhat is a Roth IRA?\n")
    with DupQ(Settings(home=tmp_path / "a", seed_bank=str(bank), backend="torch")) as svc:
        assert svc.encoder.backend == "torch" and svc.encoder.runtime is None
        torch_hits = svc.search("best way to boil eggs", k=2)["results"]
    with DupQ(Settings(home=tmp_path / "b", seed_bank=str(bank))) as svc:
        assert svc.encoder.backend == "openvino" and svc.encoder.runtime is not None
        assert (tmp_path / "b" / "models" / "base" / "openvino" / EXPORT_META).is_file()
        fast_hits = svc.search("best way to boil eggs", k=2)["results"]
    assert [h["text"] for h in fast_hits] == [h["text"] for h in torch_hits]
    assert fast_hits[0]["score"] == pytest.approx(torch_hits[0]["score"], abs=2e-3)


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError):
        Settings.load(environ={"DUPQ_BACKEND": "tensorrt"})
    with pytest.raises(ValueError):
        SiameseEncoder(model=None, backend="tensorrt")


def test_one_question_path_agrees_with_fp32_on_the_bank(torch_enc, fast_enc, bank) -> None:
    """Each bank question alone, as a search encodes it: padded to its static bucket, one thread."""
    from dupq.models.runtime import bucket_for

    texts = [r["text"] for r in bank]
    ref = torch_enc.encode(texts)
    rt = fast_enc.runtime
    alone = np.vstack([fast_enc.encode([t]) for t in texts])
    lengths = [len(rt.tokenizer.encode(t).ids) for t in texts]
    assert any(bucket_for(n) > n for n in lengths)  # the padding is really exercised
    cos = (ref * alone).sum(1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99, (cos.mean(), cos.min())
    # The same question in a dynamic batch (no bucket padding) gives the same vector up to bf16 rounding.
    np.testing.assert_allclose(alone, fast_enc.encode(texts), atol=5e-3)


def test_longer_questions_past_the_warm_buckets_agree(fast_enc, torch_enc) -> None:
    """A bucket compiled on first use (33-48 word pieces) and a question past every bucket (dynamic graph)."""
    from dupq.models.runtime import WARM_BUCKETS, bucket_for

    mid = "How do I " + " ".join(f"thing{i}" for i in range(14)) + " in Python?"
    long = "How do I " + " ".join(f"word{i}" for i in range(60)) + " in Python?"
    n_mid, n_long = (len(fast_enc.runtime.tokenizer.encode(t).ids) for t in (mid, long))
    assert bucket_for(n_mid) not in WARM_BUCKETS and bucket_for(n_mid) is not None, n_mid
    assert bucket_for(n_long) is None, n_long
    for text in (mid, long):
        cos = float((fast_enc.encode([text]) * torch_enc.encode([text])).sum())
        assert cos >= 0.999, (text[:30], cos)


def test_saved_tokenizer_matches_the_models(fast_enc, bank, tmp_path) -> None:
    """Serving reads the tokenizer saved beside the export; it must tokenise exactly as the model does."""
    from tokenizers import Tokenizer

    from dupq.models.runtime import TOKENIZER

    saved = Tokenizer.from_file(str(fast_enc.export_dir / TOKENIZER))
    st = fast_enc.model
    long = "why " * 400  # truncated at the model's max sequence length, as SentenceTransformer does
    for text in [r["text"] for r in bank] + [long]:
        expected = st.tokenize([text])["input_ids"][0].tolist()
        assert saved.encode(text).ids == expected, text[:40]


def test_cached_export_serves_without_loading_the_model(fast_enc, tmp_path) -> None:
    """A second encoder over the same cached export answers from it without a SentenceTransformer."""
    version = tmp_path / "v"
    SiameseEncoder(fast_enc.model, threshold=0.5).save(version, weights=PACKAGED)
    first = SiameseEncoder.load(version, backend="openvino")
    v1 = first.encode(["What is a Roth IRA?"])
    again = SiameseEncoder.load(version, backend="openvino")
    np.testing.assert_allclose(again.encode(["What is a Roth IRA?"]), v1, atol=1e-6)
    assert again._model is None and again.dim == v1.shape[1]
