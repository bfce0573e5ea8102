"""dupq: duplicate-question retrieval with a Siamese (tied-weight) sentence encoder.

Example:
    >>> from dupq.service import DupQ
    >>> svc = DupQ.open("./dupq-data")          # doctest: +SKIP
    >>> svc.search("How do I reverse a list in Python?", k=3)  # doctest: +SKIP
"""

__version__ = "0.1.0"
