"""The scaling benchmark's rows on tiny shapes (no timing is asserted: speed is measured, not tested)."""
from massedit import scaling


def test_scaling_rows_cover_every_n_and_phase():
    rows = scaling.run([3, 17], d=8, d_ff=12, misalignment_up_to=10)
    phases = [r["phase"] for r in rows]
    assert phases == ["update, n=3", "EAMET alignment terms, i=2", "misalignment score, n=3",
                      "update, n=17", "EAMET alignment terms, i=16"]
    assert all(r["wall_s"] >= 0 and r["n_edits"] in (3, 17) and "peak_mb" in r for r in rows)
