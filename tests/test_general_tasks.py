"""Task files for the general-ability evaluation: the mirror's JSON, else the authors' pickle read with an
unpickler that refuses anything but plain data."""
import json
import os
import pickle
from pathlib import Path

import pytest

from massedit.datasets import general_tasks
from massedit.datasets.sources import ChecksumError

MIRROR = Path(os.environ.get("MASSEDIT_MIRROR") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_plain_pickle_loads_and_code_is_refused(tmp_path):
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps([{"sentence": "a", "label": 1, "idx": 0}]))
    assert general_tasks.load_plain_pickle(plain) == [{"sentence": "a", "label": 1, "idx": 0}]
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([Payload()]))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        general_tasks.load_plain_pickle(evil)


@pytest.mark.skipif(not (MIRROR / "glue_eval").is_dir(), reason="no data mirror")
def test_mirror_file_is_checked_and_read():
    examples, provenance = general_tasks.prepare_task("rte", str(MIRROR), "/nonexistent")
    assert len(examples) == 262 and provenance["origin"] == "mirror"
    assert set(examples[0]) == {"sentence1", "sentence2", "label", "idx"}


def test_wrong_mirror_file_is_rejected(tmp_path):
    (tmp_path / "glue_eval").mkdir()
    (tmp_path / "glue_eval" / "rte.json").write_text(json.dumps([{"x": 1}]))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        general_tasks.prepare_task("rte", str(tmp_path), str(tmp_path / "dl"))
    with pytest.raises(ValueError, match="unknown general-ability task"):
        general_tasks.prepare_task("squad", str(tmp_path), str(tmp_path / "dl"))
