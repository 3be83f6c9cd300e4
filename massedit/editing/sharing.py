"""Which residuals a smaller batch can take from a larger one, and what they depend on (no torch here: the
workflow reads this while it builds the DAG)."""
from __future__ import annotations

# Methods whose residuals the workflow optimises once for the largest batch of a dataset and slices for the
# smaller ones (residual i never depends on a later record).
SHAREABLE_RESIDUALS = ("eamet", "memit", "pmet", "alphaedit")
# The residual step each of them runs: AlphaEdit's is MEMIT's (the authors' AlphaEdit calls MEMIT's compute_z).
RESIDUAL_STEP = {"eamet": "eamet", "memit": "memit", "pmet": "pmet", "alphaedit": "memit"}
# Hyperparameters read only by the update, not by the residual step.
UPDATE_ONLY_KEYS = ("mom2_update_weight", "L2", "nullspace_threshold", "alphaedit_solve_dtype")


def residual_hparams(hp: dict) -> dict:
    """What the residuals depend on: everything but the update's own settings, and of the layers only the
    z-layer (the last one)."""
    out = {k: v for k, v in hp.items() if k not in UPDATE_ONLY_KEYS and k != "layers"}
    out["z_layer"] = max(int(x) for x in hp["layers"])
    return out


def residual_owner(method: str, hparams_of) -> str:
    """The method whose residual file serves ``method``: the method named after its residual step when both
    resolve to the same residual settings (``hparams_of(method)`` gives a method's hyperparameters), so that
    AlphaEdit reuses MEMIT's residuals; otherwise ``method`` itself."""
    step = RESIDUAL_STEP[method]
    if step != method and residual_hparams(hparams_of(step)) == residual_hparams(hparams_of(method)):
        return step
    return method
