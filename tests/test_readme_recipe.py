"""The README's "Adding a model" recipe is true: its code defines a model that, registered with
one line, builds from its config, trains from the command-line config path and passes the
contract's core checks."""

from __future__ import annotations

import re
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


def recipe_namespace() -> dict[str, Any]:
    text = README.read_text()
    section = text[text.index("### Adding a model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's 'Adding a model' section has no python block"
    ns: dict[str, Any] = {"__name__": "readme_recipe"}
    exec(compile(code.group(1), "README.md#adding-a-model", "exec"), ns)
    return ns


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> type[Scorer]:
    cls = recipe_namespace()["MyModel"]
    monkeypatch.setitem(REGISTRY, "mymodel", cls)  # the one registry line
    return cls


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
