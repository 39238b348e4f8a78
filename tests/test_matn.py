"""MATN: a user's encoding (behavior embeddings, the transformer across behaviors, the memory
units, the fusion and the residual layers) against a loop-by-loop computation, and its loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import BPRBatch, TrainData
from polyrec.models import build_model
from polyrec.models.matn import MATN


def tiny() -> TrainData:
    # users 0-2, items 0-4; view (0), cart (1), buy (2, target)
    rows = [(0, 0, 0), (0, 1, 0), (0, 3, 0), (1, 1, 0), (2, 4, 0), (0, 1, 1), (1, 2, 1),
            (0, 1, 2), (1, 2, 2), (2, 4, 2)]  # fmt: skip
    u, i, b = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "cart", "buy"),
        target="buy", user_map=IdMap.range(3), item_map=IdMap.range(5), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def by_hand(model: MATN, data: TrainData, user: int, shared: bool) -> torch.Tensor:
    behaviors = ("view", "cart", "buy")
    k_n, d = 3, model.config.dim
    heads = model.config.n_heads
    dh = d // heads
    h = []
    for b in behaviors:
        items = data.csr(b)[user].indices
        h.append(sum((model.v[i] for i in items), torch.zeros(d)))
    z = []
    for k in range(k_n):
        p = 0 if shared else k
        q = h[k] @ model.wq[p] + model.wq_bias[p]
        keys = [h[j] @ model.wk[p] + model.wk_bias[p] for j in range(k_n)]
        vals = [h[j] @ model.wv[p] + model.wv_bias[p] for j in range(k_n)]
        a = torch.zeros(d)
        for head in range(heads):
            sl = slice(head * dh, (head + 1) * dh)
            logits = torch.stack([2 * (q[sl] @ keys[j][sl]) for j in range(k_n)])
            att = torch.softmax(logits, 0)
            a[sl] = sum(att[j] * vals[j][sl] for j in range(k_n))
        r = a + h[k] + h[k]
        mem = F.relu(r @ model.mem_att[k] + model.mem_att_bias[k])
        trans = sum(mem[m] * model.memory[m] for m in range(model.config.memory_units))
        z.append(r @ trans)
    w = torch.softmax(2 * model.fuse, 0)
    f = sum(w[k] * z[k] for k in range(k_n))
    for layer in model.ffn:
        f = F.relu(layer(f)) + f
    return f


@pytest.mark.parametrize("shared", [False, True])
def test_encoding_by_hand(shared: bool) -> None:
    data = tiny()
    torch.manual_seed(0)
    params = {"dim": 4, "n_heads": 2, "memory_units": 3, "behavior_projections": not shared}
    model = build_model("matn", params, data)
    assert isinstance(model, MATN)
    with torch.no_grad():  # non-trivial biases and fusion weights
        for p in (model.wq_bias, model.wk_bias, model.wv_bias, model.mem_att_bias, model.fuse):
            p.normal_()
        users, items = model.final_embeddings()
        for u in range(3):
            torch.testing.assert_close(users[u], by_hand(model, data, u, shared))
    torch.testing.assert_close(items, model.w.detach())


def test_hinge_loss_and_penalty() -> None:
    data = tiny()
    torch.manual_seed(1)
    model = build_model("matn", {"dim": 4, "reg": 0.5}, data)
    batch = BPRBatch(torch.tensor([0, 1, 0]), torch.tensor([1, 2, 1]), torch.tensor([4, 0, 2]))
    out = model.loss(batch)
    with torch.no_grad():
        f = model.encode(torch.tensor([0, 1]))
        pos = torch.stack([f[0] @ model.w[1], f[1] @ model.w[2], f[0] @ model.w[1]])
        neg = torch.stack([f[0] @ model.w[4], f[1] @ model.w[0], f[0] @ model.w[2]])
        hinge = torch.clamp(1 - (pos - neg), min=0).mean()
        penalty = sum(float((p**2).sum()) for p in model.parameters())
    torch.testing.assert_close(out["hinge"].detach(), hinge)
    assert float(out["reg"].detach()) == pytest.approx(0.5 * penalty, rel=1e-5)
    out["hinge"].backward()
    assert model.v.grad is not None and float(model.v.grad.abs().sum()) > 0


def test_hide_positive_leaves_the_pair_out_of_its_users_input() -> None:
    data = tiny()
    torch.manual_seed(0)
    model = build_model("matn", {"dim": 4, "hide_positive": "all"}, data)
    assert isinstance(model, MATN)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 4])
    with torch.no_grad():
        h = model.behavior_embeddings(users)
        got = model.without_pairs(h, users, items)
        expect = h.clone()
        for b, (u, i) in enumerate([(0, 1), (1, 2), (2, 4)]):
            for k, beh in enumerate(("view", "cart", "buy")):
                if i in data.csr(beh)[u].indices:
                    expect[b, k] -= model.v[i]
    torch.testing.assert_close(got, expect)
    assert not torch.equal(got, h)
