"""MA-GNN: a user vector (window graph, long-term attention and memory, gate, item–item term)
against a position-by-position computation, and the window graph's neighbours."""

from __future__ import annotations

import math

import torch

from interest_contract import sequence_log
from polyrec.models import TrainData, build_model
from polyrec.models._layers import sinusoid_positions
from polyrec.models.magnn import MAGNN


def by_hand(model: MAGNN, items: list[int]) -> torch.Tensor:
    c = model.config
    emb = model.item_emb.weight
    short, long_ = items[-c.short_len :], items[: -c.short_len] if len(items) > c.short_len else []
    e = [emb[i] for i in short]
    n = len(e)
    h = []
    for i in range(n):
        nb = [k for k in range(n) if k != i and abs(k - i) <= c.neighbours]
        agg = sum((e[k] / len(nb) for k in nb), torch.zeros(c.dim))
        h.append(torch.tanh(model.w1.weight @ torch.cat([agg, e[i]])))
    p_short = torch.tanh(model.w2.weight @ (sum(h) / n))
    if long_:
        t = len(items)
        pe = sinusoid_positions(c.max_len, c.dim)[c.max_len - t :]
        hl = torch.stack([emb[i] + pe[j] for j, i in enumerate(long_)])  # [T_l, d]
        logits = torch.stack([model.att3.weight @ torch.tanh(model.att1.weight @ x) for x in hl])
        att = torch.softmax(logits, dim=0)  # over positions, per head
        z = torch.tanh(hl.T @ att).mean(1)
    else:
        z = torch.zeros(c.dim)
    s = torch.softmax(torch.stack([z @ k for k in model.mem_key]), 0)
    p_long = z + sum(s[m] * model.mem_val[m] for m in range(c.memory_units))
    mean_e = sum(e) / n
    g = torch.sigmoid(model.gate_short.weight @ mean_e + model.gate_long.weight @ p_long)
    return g * p_short + (1 - g) * p_long + model.item_item.weight @ mean_e


def test_user_vector_by_hand() -> None:
    data = TrainData(sequence_log(n_users=20))
    torch.manual_seed(0)
    params = {"dim": 6, "max_len": 8, "short_len": 4, "neighbours": 2, "n_heads": 3,
              "memory_units": 5}  # fmt: skip
    model = build_model("magnn", params, data)
    assert isinstance(model, MAGNN)
    model.eval()
    cases = [[3, 7, 1, 9, 4, 2, 8], [5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    t = max(len(x) for x in cases)
    hist = torch.zeros(len(cases), t, dtype=torch.long)
    for b, x in enumerate(cases):  # left-padded, item i at table row i + 1
        hist[b, t - len(x) :] = torch.tensor(x) + 1
    lengths = torch.tensor([len(x) for x in cases])
    with torch.no_grad():
        got = model.interests(hist, lengths)[:, 0]
        for b, x in enumerate(cases):
            rows = [i + 1 for i in x][-params["max_len"] :]
            torch.testing.assert_close(got[b], by_hand(model, rows), rtol=1e-5, atol=1e-6)


def test_positions_are_the_transformer_encoding() -> None:
    pe = sinusoid_positions(3, 4)
    assert abs(float(pe[2, 0]) - math.sin(2.0)) < 1e-7
    assert abs(float(pe[2, 1]) - math.cos(2.0)) < 1e-7
    assert abs(float(pe[2, 2]) - math.sin(2.0 / 100.0)) < 1e-7
