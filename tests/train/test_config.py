"""Recipes: YAML + dotlist onto the dataclasses; errors name the key; DeepSpeed JSONs."""

from __future__ import annotations

import json

import pytest
from train_helpers import DEMO, cli_error

from dit_video.cli import main
from dit_video.pipeline import recipe_from_yaml
from dit_video.train.config import (
    CONFIG_ROOT,
    ConfigError,
    TrainConfig,
    config_to_yaml,
    load_train_config,
    resolve_deepspeed_json,
)


def test_demo_recipe_loads_with_preset_and_overrides(tmp_path):
    cfg = load_train_config(DEMO, ["train.steps=7", "optim.lr=0.5", "model.depth=2"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.train.steps == 7 and cfg.optim.lr == 0.5 and cfg.model.depth == 2
    assert cfg.model.conditioning == "text" and cfg.condition.text_encoder == "tiny"
    assert cfg.model.frequency_embedding_size == 256  # from the preset / schema defaults
    # the saved (resolved) recipe reads back to the same config, as a recipe and as a pipeline recipe
    (tmp_path / "saved.yaml").write_text(config_to_yaml(cfg))
    assert load_train_config(tmp_path / "saved.yaml") == cfg
    assert recipe_from_yaml(config_to_yaml(cfg)) == cfg.pipeline_config()


def test_every_recipe_in_configs_train_loads():
    recipes = sorted((CONFIG_ROOT / "train").glob("*.yaml"))
    assert recipes
    for r in recipes:
        load_train_config(r)


@pytest.mark.parametrize("override, key, words", [
    ("model.hidden_sise=64", "model.hidden_sise", "not in 'VideoDiTConfig'"),
    ("train.stepz=3", "train.stepz", "not in 'RunConfig'"),
    ("train.steps=many", "train.steps", "Integer"),
    ("optim.lr=fast", "optim.lr", "Float"),
])
def test_unknown_key_or_wrong_type_names_the_key(override, key, words):
    with pytest.raises(ConfigError) as e:
        load_train_config(DEMO, [override])
    assert key in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_inconsistent_recipes_are_clear_errors():
    with pytest.raises(ValueError, match="caption_channels"):
        load_train_config(DEMO, ["condition.tiny_dim=32"])
    with pytest.raises(ValueError, match="data.num_frames"):
        load_train_config(DEMO, ["data.num_frames=4"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_train_config(DEMO, ["model.preset=huge"])
    with pytest.raises(ValueError, match="sample.guidance_interval"):
        load_train_config(DEMO, ["sample.guidance_interval=[0.8,0.2]"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_train_config("nope.yaml")
    assert load_train_config(DEMO).diffusion.cond_frames == 4  # the demo recipe trains video prediction
    for lone in (["diffusion.cond_frames=0"], ["diffusion.cond_prob=0"]):  # either alone trains nothing
        with pytest.raises(ValueError, match="trains no clip with given frames: set both"):
            load_train_config(DEMO, lone)
    assert load_train_config(DEMO, ["diffusion.cond_frames=0", "diffusion.cond_prob=0"]).diffusion.cond_frames == 0
    with pytest.raises(ValueError, match="leave none to generate after diffusion.cond_frames=4"):
        load_train_config(DEMO, ["model.num_frames=4"])


def test_cli_reports_config_errors_in_one_line(capsys, tmp_path):
    assert main(["train", str(DEMO), "model.foo=1", f"train.out_dir={tmp_path}"]) == 2
    err = cli_error(capsys.readouterr().err)
    assert "model.foo" in err and err.startswith("dit-video train: error:")


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_deepspeed_jsons(stage, precision):
    ds = json.loads(resolve_deepspeed_json(f"zero{stage}_{precision}").read_text())
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["bf16"]["enabled"] is (precision == "bf16")
    assert ds["zero_allow_untested_optimizer"] is True


def test_deepspeed_config_takes_batch_and_precision_from_the_recipe():
    from dit_video.train.trainer import deepspeed_config

    cfg = load_train_config(DEMO, ["data.batch_size=3", "train.grad_accum=2", "optim.grad_clip=0.5",
                                   "train.zero_stage=1", "train.precision=bf16"])
    ds = deepspeed_config(cfg)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) \
        == (3, 2, 0.5)
    assert ds["zero_optimization"]["stage"] == 1 and ds["bf16"]["enabled"] is True
    with pytest.raises(FileNotFoundError, match="zero9"):
        deepspeed_config(load_train_config(DEMO, ["train.deepspeed=zero9"]))
