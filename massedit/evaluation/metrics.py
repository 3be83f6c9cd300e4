"""Pure metric functions on scores (reference evaluation.md §3.2–3.4, §3.10).

Everything here works on plain numbers: booleans for practical correctness, length-normalised NLLs for
the lenient comparisons and the magnitudes. Nothing touches a model.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from massedit.evaluation.scoring import TargetScore


def practical(scores: Iterable[TargetScore]) -> list[bool]:
    """Practical (exact-match) correctness per score (§3.2): every target token is the argmax."""
    return [s.exact for s in scores]


def lenient_rewrite(nll_new: float, nll_true: float) -> bool:
    """Rewrite/paraphrase lenient success (§3.3): NLL(new) ≤ NLL(true); a tie counts as success."""
    return nll_new <= nll_true


def lenient_neighborhood(nll_new: float, nll_ref: float) -> bool:
    """Neighbourhood lenient success (§3.3): the item's own answer stays strictly more likely."""
    return nll_new > nll_ref


def magnitude_rewrite(nll_new: float, nll_true: float) -> float:
    """EM/PM term (§3.4): exp(−NLL(new)) − exp(−NLL(true))."""
    return math.exp(-nll_new) - math.exp(-nll_true)


def magnitude_neighborhood(nll_new: float, nll_ref: float) -> float:
    """NM term (§3.4): exp(−NLL(ref)) − exp(−NLL(new))."""
    return math.exp(-nll_ref) - math.exp(-nll_new)


def mean(values: Sequence[float | bool] | None) -> float | None:
    """Arithmetic mean; None for an empty or missing list (the record has no such prompts)."""
    if not values:
        return None
    return sum(float(v) for v in values) / len(values)


def aggregate(per_record: Iterable[float | None], scale: float = 1.0) -> float | None:
    """Mean over the records that have a value (None = metric not available there), times ``scale``."""
    vals = [v for v in per_record if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return scale * sum(vals) / len(vals)
