"""What a model version is at serving time: the twin encoder and its energy, the cross-encoder re-ranker, the
score fusion of the two, and the OpenVINO runtime that runs them without torch.

- :mod:`~dupq.models.energy`: :class:`Energy` (cosine / Euclidean: every decision that depends on it);
- :mod:`~dupq.models.encoder`: :class:`SiameseEncoder` (one transformer, tied weights) and a version's dupq.json;
- :mod:`~dupq.models.cross`: :class:`CrossScorer`, the version's cross-encoder at serving time;
- :mod:`~dupq.models.fusion`: :class:`ScoreFusion` of the cross-encoder's logit and the twin's score;
- :mod:`~dupq.models.runtime`: the OpenVINO export and its compiled pipelines.
"""
