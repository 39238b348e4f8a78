"""HGT on the behavior graph: one layer's heterogeneous mutual attention, messages and
target-specific aggregation (HGT WWW 2020, Eq. 3-5) against a node-by-node computation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models import build_model
from polyrec.models.hgt import HGT
from polyrec.models.propagation import segment_softmax


def tiny() -> TrainData:
    # users 0-2, items 0-3; view (0) and buy (1, target)
    rows = [(0, 0, 0), (0, 1, 0), (1, 1, 0), (2, 3, 0), (0, 1, 1), (1, 2, 1), (2, 3, 1)]
    u, i, b = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "buy"), target="buy",
        user_map=IdMap.range(3), item_map=IdMap.range(4), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def test_segment_softmax_normalises_per_target() -> None:
    logits = torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    index = torch.tensor([0, 2, 0, 2])
    got = segment_softmax(logits, index, 3)[:, 0]
    a, b = torch.softmax(torch.tensor([1.0, 0.5]), 0), torch.softmax(torch.tensor([2.0, 3.0]), 0)
    torch.testing.assert_close(got, torch.stack([a[0], b[0], a[1], b[1]]))


def test_one_layer_by_hand() -> None:
    data = tiny()
    torch.manual_seed(0)
    model = build_model("hgt", {"dim": 4, "n_heads": 2, "n_layers": 1, "dropout": 0.0}, data)
    assert isinstance(model, HGT)
    layer = model.layers[0]
    with torch.no_grad():  # non-trivial edge-type matrices and μ
        layer.w_att.normal_()
        layer.w_msg.normal_()
        layer.mu.uniform_(0.5, 1.5)
        users, items = model.final_embeddings()
    got = torch.cat([users, items]).numpy()
    x = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    n_u, h, dh = 3, 2, 2
    # edges (source node, target node, edge type φ): behavior b user → item is 2b, back 2b + 1
    edges = []
    for b_code, b in enumerate(("view", "buy")):
        us, its = data.pairs(b)
        for u, i in zip(us, its, strict=True):
            edges += [(u, n_u + i, 2 * b_code), (n_u + i, u, 2 * b_code + 1)]
    expect = np.zeros_like(got)
    with torch.no_grad():
        for t in range(len(x)):
            tt = 0 if t < n_u else 1  # node type of t
            heads = []
            for head in range(h):
                sl = slice(head * dh, (head + 1) * dh)
                scores, msgs = [], []
                for s, tgt, phi in edges:
                    if tgt != t:
                        continue
                    ts = 0 if s < n_u else 1
                    k = layer.k_lin[ts](x[s])[sl] @ layer.w_att[phi, head]
                    q = layer.q_lin[tt](x[t])[sl]
                    scores.append(float(k @ q) * float(layer.mu[phi, head]) / math.sqrt(dh))
                    msgs.append(layer.m_lin[ts](x[s])[sl] @ layer.w_msg[phi, head])
                att = torch.softmax(torch.tensor(scores), 0)
                heads.append(sum(a * m_ for a, m_ in zip(att, msgs, strict=True)))
            agg = F.gelu(torch.cat(heads))
            expect[t] = (layer.a_lin[tt](agg) + x[t]).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
