"""The README's "Adding a model" recipe is true: its code defines a model that, registered with
one line, builds from its config, trains from the command-line config path and passes the
contract's core checks."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from contract_base import ModelSpec, fit
from model_contract import synthetic_log
from polyrec.config import RunConfig, load_config, to_toml
from polyrec.data.views import TrainData
from polyrec.models import REGISTRY, Scorer, create_model
from polyrec.models.registry import canonical_name

README = Path(__file__).resolve().parents[1] / "README.md"


def recipe_module(folder: Path) -> Any:
    """The README's model file, written to ``folder/mymodel.py`` and imported."""
    text = README.read_text()
    section = text[text.index("### Adding a model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's 'Adding a model' section has no python block"
    path = folder / "readme_mymodel.py"
    path.write_text(code.group(1))
    spec = importlib.util.spec_from_file_location("readme_mymodel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_mymodel"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[type[Scorer]]:
    cls = recipe_module(tmp_path).MyModel
    monkeypatch.setitem(REGISTRY, "mymodel", cls)  # the one registry line
    yield cls
    sys.modules.pop("readme_mymodel", None)


def test_recipe_model_trains_and_scores(registered: type[Scorer], tmp_path: Path) -> None:
    assert canonical_name("MyModel") == "mymodel"
    cfg = load_config(None, ["params.dim=8"], model="mymodel")
    assert type(cfg.params).__name__ == "MyModelConfig" and cfg.params.dim == 8
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg
    data = TrainData(synthetic_log())
    torch.manual_seed(0)
    model = create_model("mymodel", cfg.params).setup(data)
    losses = fit(model, ModelSpec("mymodel", {"dim": 8}, lr=0.05, epochs=4), data)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        scores = model.scores(torch.arange(5))
    assert scores.shape == (5, data.n_items)
    restored = create_model("mymodel", cfg.params).restore(data.schema)
    restored.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(restored.scores(torch.arange(5)), scores, rtol=0, atol=0)
    assert RunConfig(model="mymodel").params.dim == 64
    # the field docstrings are the config's documentation
    fields = registered.Config.model_fields
    assert fields["dim"].description == "Embedding size d (§4.1 of the paper)."
