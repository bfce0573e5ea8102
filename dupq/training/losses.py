"""Training losses of the twin encoder, built from the sentence-transformers losses.

:func:`build_loss` returns the margin contrastive loss (Hadsell, Chopra & LeCun 2006) with the distance that
matches an :class:`~dupq.models.energy.Energy`, optionally joined by an in-batch ranking term
(:class:`ContrastiveRankingLoss`). It takes explicit arguments, not a training config, so this module
depends on nothing of dupq's but the energy.

Why the ranking term: the contrastive loss scores each pair on its own against one global margin, which is
what a duplicate *threshold* needs (pair AP rises), but it never compares a question's duplicate with the other
questions it competes with at retrieval time, and on QQP it lowered retrieval nDCG@10 and forgot AskUbuntu
(docs/benchmarks.md). ``MultipleNegativesRankingLoss`` on the same batch's duplicate pairs (every other
question of the batch is a negative) is the base model's own training objective and keeps the ranking.

The positive-only pairs (duplicates with no labelled negative) train through :func:`build_ranking_loss`
instead, as a second dataset: ``GISTEmbedLoss`` (in-batch negatives, but any in-batch candidate a frozen guide
model scores above the true pair is masked, because on Quora most near neighbours are unlabelled duplicates)
or plain ``MultipleNegativesRankingLoss``.

Example:
    >>> loss = build_loss(model, loss="contrastive", energy=Energy.COSINE, margin=0.7,  # doctest: +SKIP
    ...                   ranking_weight=1.0)
    >>> rank = build_ranking_loss(model, "gist", guide=frozen_copy)                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from dupq.models.energy import Energy
from dupq.training.config import LOSSES, RANKING_LOSSES  # declared with the options that take them (no torch)

__all__ = ["LOSSES", "RANKING_LOSSES", "RANKING_SCALE", "ContrastiveRankingLoss", "build_loss", "build_ranking_loss"]

#: Inverse temperature of the ranking term (the library's default, also all-MiniLM-L6-v2's training value).
RANKING_SCALE = 20.0


class ContrastiveRankingLoss(nn.Module):
    """A contrastive loss on every pair plus ``ranking_weight`` x an in-batch ranking loss on the duplicates.

    Both terms are computed from one forward pass of the batch. The ranking term is the symmetric
    ``MultipleNegativesRankingLoss``: for each duplicate pair (a, b) of the batch, b must score higher with a
    than the second questions of the batch's other duplicate pairs, and a higher with b than their first
    questions. It needs at least two duplicate pairs in a batch and is skipped otherwise.

    Args:
        model: The SentenceTransformer being trained.
        contrastive: A ``ContrastiveLoss`` or ``OnlineContrastiveLoss`` on ``model``.
        ranking_weight: Weight of the ranking term (> 0).
        scale: Inverse temperature of the ranking term.

    Example:
        >>> loss = ContrastiveRankingLoss(model, ContrastiveLoss(model), ranking_weight=1.0)  # doctest: +SKIP
    """

    def __init__(self, model: Any, contrastive: nn.Module, ranking_weight: float, scale: float = RANKING_SCALE):
        super().__init__()
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        if ranking_weight <= 0:
            raise ValueError(f"ranking_weight must be > 0, got {ranking_weight}")
        self.model = model
        self.contrastive = contrastive
        self.ranking = MultipleNegativesRankingLoss(
            model, scale=scale, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
        )
        self.ranking_weight = float(ranking_weight)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        # Both columns are questions of the same kind, so one merged forward pass embeds them.
        embeddings = embed_columns(self.model, sentence_features, separate_first=False)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The loss of a batch from its two embedding columns and its 0/1 labels."""
        loss = self.contrastive.compute_loss_from_embeddings(embeddings, labels)
        duplicates = labels.view(-1) > 0.5
        if int(duplicates.sum()) >= 2:
            first, second = (e[duplicates] for e in embeddings)
            loss = loss + self.ranking_weight * self.ranking.compute_loss_from_embeddings([first, second], labels)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "contrastive": type(self.contrastive).__name__,
            **self.contrastive.get_config_dict(),
            "ranking_weight": self.ranking_weight,
            "ranking_scale": self.ranking.scale,
        }


def build_loss(model: Any, *, loss: str, energy: Energy | str, margin: float, ranking_weight: float) -> nn.Module:
    """The contrastive loss with the distance that matches ``energy`` (plus the ranking term).

    ``contrastive`` is Hadsell et al.'s ``0.5 * (y * d^2 + (1 - y) * max(0, margin - d)^2)`` averaged over the
    batch; ``online-contrastive`` applies it only to the hard pairs of each batch. ``d`` is
    :meth:`Energy.distance_metric`: the cosine distance ``1 - cos`` for the cosine energy, the Euclidean
    distance for the Euclidean one.

    Args:
        model: The SentenceTransformer being trained.
        loss: One of :data:`LOSSES`.
        energy: The energy the model is trained for.
        margin: Contrastive margin in the units of that distance (:attr:`Energy.default_margin`).
        ranking_weight: > 0 wraps the loss in a :class:`ContrastiveRankingLoss` of that weight; 0: none.

    Example:
        >>> loss = build_loss(model, loss="online-contrastive", energy=Energy.EUCLIDEAN,  # doctest: +SKIP
        ...                   margin=Energy.EUCLIDEAN.default_margin, ranking_weight=0)
    """
    from sentence_transformers.sentence_transformer.losses import ContrastiveLoss, OnlineContrastiveLoss

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    metric = Energy.from_name(energy).distance_metric()
    kind = ContrastiveLoss if loss == "contrastive" else OnlineContrastiveLoss
    contrastive: nn.Module = kind(model, distance_metric=metric, margin=margin)
    if ranking_weight > 0:
        return ContrastiveRankingLoss(model, contrastive, ranking_weight)
    return contrastive


def build_ranking_loss(model: Any, kind: str, *, guide: Any = None) -> nn.Module:
    """The in-batch ranking loss of the positive-only (anchor, positive) pairs.

    Args:
        model: The SentenceTransformer being trained.
        kind: ``"gist"`` (``GISTEmbedLoss``: false negatives the ``guide`` ranks above the positive are
            masked) or ``"mnrl"`` (``MultipleNegativesRankingLoss``, every other in-batch question a negative).
        guide: A frozen SentenceTransformer (the model training starts from); required for ``"gist"``.

    Example:
        >>> build_ranking_loss(model, "mnrl")  # doctest: +SKIP
    """
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, MultipleNegativesRankingLoss

    if kind == "gist":
        if guide is None:
            raise ValueError("the gist ranking loss needs a guide model")
        return GISTEmbedLoss(model, guide)
    if kind == "mnrl":
        return MultipleNegativesRankingLoss(model, scale=RANKING_SCALE)
    raise ValueError(f"ranking loss must be 'gist' or 'mnrl', got {kind!r}")
