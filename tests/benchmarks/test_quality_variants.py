"""Every named variant of the quality lab (``python -m benchmarks quality``) is a valid recipe on top of the
demo's, so a long lab run cannot fail at its n-th variant on a config error."""

from __future__ import annotations

import sys

import pytest

from dit_video.commands.bench import find_benchmarks
from dit_video.train.config import CONFIG_ROOT, load_train_config

ROOT = find_benchmarks()
if ROOT is not None and str(ROOT) not in sys.path:  # benchmarks/ is a directory of the checkout, not a package
    sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402


@pytest.mark.parametrize("name", sorted(quality.VARIANTS))
def test_variant_loads_on_the_demo_recipe(name):
    cfg = load_train_config(CONFIG_ROOT / "train" / "demo.yaml", quality.VARIANTS[name])
    if cfg.diffusion.objective != "flow":  # DDPM objectives are sampled by DDIM and predict what their names say
        assert cfg.sample.sampler == "ddim" and cfg.diffusion.prediction == "velocity"
