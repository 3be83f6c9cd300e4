"""The configuration schema: the shipped config validates, defaults are filled, errors name the key."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from massedit import config as mc

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config" / "config.yaml"


@pytest.fixture
def raw():
    return yaml.safe_load(SHIPPED.read_text())


def minimal() -> dict:
    return {
        "models": {"m": {"source": {"kind": "local", "path": "model"}}},
        "datasets": {"d": {"kind": "quickstart"}},
        "grid": {"models": ["m"], "datasets": ["d"], "n_edits": [2]},
    }


def test_shipped_config_validates():
    config = mc.load_config(SHIPPED)
    assert config["grid"]["methods"] == ["eamet", "memit"]
    assert mc.stats_wildcards(config, "smollm2-135m", "eamet")["layers"] == "3-4"


def test_schema_declares_2020_12():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_defaults_are_filled():
    config = mc.validate(minimal())
    assert config["preset"] == "paper" and config["seed"] == 0 and config["mirror_dir"] is None
    assert config["models"]["m"]["dtype"] == "float32" and config["models"]["m"]["bos"] is False
    assert config["stats"]["corpus"] == "model-sample"
    assert config["corpora"]["model-sample"]["temperature"] == 1.0
    eamet = config["methods"]["eamet"]["defaults"]
    assert eamet["layers"] == [3, 4] and eamet["mom2_update_weight"] == 4000 and eamet["v_lr"] == 0.5
    assert eamet["templates"]["seeds"][0] == "The" and len(eamet["templates"]["seeds"]) == 12
    assert config["methods"]["memit"]["defaults"]["clamp_norm_factor"] == 0.75
    assert config["evaluation"]["prefix_len"] == 5


def test_defaults_do_not_leak_between_configs():
    first = mc.validate(minimal())
    first["methods"]["eamet"]["defaults"]["templates"]["seeds"].append("Extra")
    assert len(mc.validate(minimal())["methods"]["eamet"]["defaults"]["templates"]["seeds"]) == 12


def test_wrong_type_names_key_path(raw):
    raw["methods"]["eamet"]["defaults"]["v_lr"] = "fast"
    with pytest.raises(mc.ConfigError, match=r"methods\.eamet\.defaults\.v_lr: 'fast' is not of type 'number'"):
        mc.validate(raw)


def test_wrong_type_in_list_names_index(raw):
    raw["grid"]["n_edits"] = [10, "forty"]
    with pytest.raises(mc.ConfigError, match=r"grid\.n_edits\[1\]"):
        mc.validate(raw)


def test_unknown_key_is_named(raw):
    raw["methods"]["memit"]["models"]["smollm2-135m"]["v_lrr"] = 0.1
    with pytest.raises(mc.ConfigError, match=r"methods\.memit\.models\.smollm2-135m\.v_lrr: unknown key"):
        mc.validate(raw)


def test_source_kind_requires_its_keys(raw):
    del raw["models"]["smollm2-135m"]["source"]["file"]
    with pytest.raises(mc.ConfigError, match=r"models\.smollm2-135m\.source: 'file' is a required property"):
        mc.validate(raw)


def test_undefined_grid_name(raw):
    raw["grid"]["models"] = ["gpt-j"]
    with pytest.raises(mc.ConfigError, match=r"grid\.models\[0\]: 'gpt-j' is not defined under models"):
        mc.validate(raw)


def test_dataset_specs_take_their_kinds_keys(raw):
    """Each kind accepts its loader's keys (massedit.datasets SPEC_KEYS) and no other: a typo is an error."""
    raw["datasets"]["cf"] = {"kind": "counterfact", "schema": "easyedit", "dedup_subjects": True}
    mc.validate(raw)
    raw["datasets"]["cf"]["variant"] = "mcf"
    with pytest.raises(mc.ConfigError, match=r"datasets\.cf\.variant: unknown key"):
        mc.validate(raw)
    del raw["datasets"]["cf"]["kind"]
    with pytest.raises(mc.ConfigError, match=r"datasets\.cf: 'kind' is a required property"):
        mc.validate(raw)


def test_override_merges_over_defaults(raw):
    raw["methods"]["eamet"]["defaults"]["kl_factor"] = 0.5
    raw["methods"]["eamet"]["models"]["smollm2-135m"] = {"v_lr": 0.04, "templates": {"top_k": 5}}
    hp = mc.resolve_hparams(mc.validate(raw), "eamet", "smollm2-135m")
    # The override must not mask a changed default, and nested blocks merge key by key.
    assert hp["kl_factor"] == 0.5 and hp["v_lr"] == 0.04
    assert hp["templates"]["top_k"] == 5 and hp["templates"]["temperature"] == 0.5


def test_params_ignore_key_order(raw):
    a = mc.validate(copy.deepcopy(raw))
    reordered = copy.deepcopy(raw)
    reordered["methods"]["eamet"]["defaults"] = dict(reversed(list(raw["methods"]["eamet"]["defaults"].items())))
    b = mc.validate(reordered)
    assert repr(mc.resolve_hparams(a, "eamet", "smollm2-135m")) == repr(mc.resolve_hparams(b, "eamet", "smollm2-135m"))


def test_layers_must_ascend(raw):
    raw["methods"]["memit"]["defaults"]["layers"] = [4, 3]
    with pytest.raises(mc.ConfigError, match=r"methods\.memit\.defaults\.layers: layers must be ascending"):
        mc.validate(raw)


def test_mirror_env_overrides(raw, monkeypatch):
    config = mc.validate(raw)
    monkeypatch.delenv(mc.MIRROR_ENV, raising=False)
    assert mc.mirror_dir(config) is None
    monkeypatch.setenv(mc.MIRROR_ENV, "/data/mirror")
    assert mc.mirror_dir(config) == "/data/mirror"


def test_layers_key():
    assert mc.stats_layers_key([3, 4]) == "3-4"
    assert mc.parse_layers_key("4-5-6") == [4, 5, 6]


def test_grid_adds_unedited_once_per_cell(raw):
    cells = mc.grid(mc.validate(raw))
    assert len(cells) == 2 * 3
    assert sum(cell.method == mc.UNEDITED for cell in cells) == 2


def test_model_stats_override_names_its_own_file(raw):
    global_n_docs = raw["stats"]["n_docs"]
    raw["models"]["smollm2-135m"]["stats"] = {"maxlen": 200}
    wildcards = mc.stats_wildcards(mc.validate(raw), "smollm2-135m", "memit")
    # the override replaces maxlen only; n_docs still comes from the global stats block
    assert (wildcards["maxlen"], wildcards["n_docs"]) == (200, global_n_docs)


def test_preset_sets_quirk_switches_unless_given(raw):
    paper = mc.validate(copy.deepcopy(raw))
    assert mc.resolve_hparams(paper, "eamet", "smollm2-135m")["prompt_build"] == "string"
    clean = copy.deepcopy(raw)
    clean["preset"] = "clean"
    assert mc.resolve_hparams(mc.validate(clean), "eamet", "smollm2-135m")["prompt_build"] == "ids"
    explicit = copy.deepcopy(raw)
    explicit["methods"]["memit"]["defaults"]["prompt_build"] = "ids"
    assert mc.resolve_hparams(mc.validate(explicit), "memit", "smollm2-135m")["prompt_build"] == "ids"
