"""KHGT: one propagation (memory-mixed graph attention with the interactions' time slots, the
behavior transformer, the gated aggregation) against an edge-by-edge computation; time slots
and item–item relations built from the training log."""

from __future__ import annotations

import math

import numpy as np
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models import build_model
from polyrec.models.khgt import KHGT, sinusoid, two_way_leaky_relu6

DAY = 86400.0


def tiny() -> TrainData:
    # users 0-2, items 0-3; view (0), buy (1, target); timestamps in seconds
    rows = [(0, 0, 0, 0.0), (0, 1, 0, 1.0), (0, 1, 0, 9 * DAY), (1, 1, 0, 3 * DAY),
            (2, 3, 0, 12 * DAY), (0, 1, 1, 10 * DAY), (1, 2, 1, 4 * DAY), (2, 3, 1, 12 * DAY)]  # fmt: skip
    u, i, b, t = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "buy"), target="buy",
        user_map=IdMap.range(3), item_map=IdMap.range(4), timestamp=t.astype(np.float64),
        name="tiny",
    )  # fmt: skip
    return TrainData(log)


def test_edges_carry_the_latest_time_slot() -> None:
    model = build_model("khgt", {"dim": 4, "slot": 5 * DAY, "item_item_edges": 50}, tiny())
    assert isinstance(model, KHGT)
    edges = [
        (int(u), int(i), int(s))
        for u, i, s in zip(model.ui_src, model.ui_dst, model.ui_slot, strict=True)
    ]
    # view (0, 1) at 1 s and 9 days: its latest, slot 1; buy (0, 1) at 10 days: slot 2
    assert model.ui_bounds == [0, 4, 7]
    assert sorted(edges[:4]) == [(0, 0, 0), (0, 1, 1), (1, 1, 0), (2, 3, 2)]
    assert sorted(edges[4:]) == [(0, 1, 2), (1, 2, 0), (2, 3, 2)]
    assert model.time_emb.shape == (3, 8)
    torch.testing.assert_close(model.time_emb.detach(), sinusoid(3, 4))
    # item–item pairs of one behavior are two items of one user's rows of it
    views = {0: {0, 1}, 1: {1}, 2: {3}}
    for i, j in zip(model.ii_src[:50].tolist(), model.ii_dst[:50].tolist(), strict=True):
        assert any({i, j} <= items for items in views.values())


def test_sinusoid_and_activation() -> None:
    got = sinusoid(2, 2)
    f = [1.0, 1.0 / 10000.0]  # 10000^(-2j/d), j < d = 2
    expect = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                           [math.sin(f[0]), math.cos(f[0]), math.sin(f[1]), math.cos(f[1])]])  # fmt: skip
    torch.testing.assert_close(got, expect / (4 * math.sqrt(2)))
    x = torch.tensor([-2.0, 0.5, 6.0, 10.0])
    torch.testing.assert_close(two_way_leaky_relu6(x), torch.tensor([-0.2, 0.5, 6.0, 6.4]))


def test_user_propagation_by_hand() -> None:
    data = tiny()
    torch.manual_seed(0)
    model = build_model("khgt", {"dim": 4, "n_heads": 2, "n_layers": 1, "memory_units": 2,
                                 "slot": 5 * DAY, "item_item_edges": 0}, data)  # fmt: skip
    assert isinstance(model, KHGT)
    prop = model.layers[0][0]  # users ← items
    hu, hi = model.user_emb.weight.detach(), model.item_emb.weight.detach()
    with torch.no_grad():
        got = prop(
            hi, hu, (model.ui_dst, model.ui_src, model.ui_bounds), 3, model.time_emb, model.ui_slot
        )
        d, h, dh, k_n = 4, 2, 2, 2
        edges = [(int(u), int(i), int(s)) for u, i, s in
                 zip(model.ui_src, model.ui_dst, model.ui_slot, strict=True)]  # fmt: skip
        bounds = model.ui_bounds
        expect = torch.zeros(3, d)
        for t in range(3):
            raw, g = [], []
            for k in range(k_n):
                w = [sum(prop.mix[c, k, m] * prop.qkv[c, m] for m in range(2)) for c in range(3)]
                q = hu[t] @ w[0]
                outs = torch.zeros(d)
                for head in range(h):
                    sl = slice(head * dh, (head + 1) * dh)
                    logits, vals = [], []
                    for u, i, s in edges[bounds[k] : bounds[k + 1]]:
                        if u != t:
                            continue
                        x = hi[i] + prop.time_k[k](model.time_emb[s])
                        logits.append(float((x @ w[1])[sl] @ q[sl]) / math.sqrt(dh))
                        vals.append((x @ w[2])[sl])
                    if logits:
                        att = torch.softmax(torch.tensor(logits), 0)
                        outs[sl] = sum(a * v for a, v in zip(att, vals, strict=True))
                raw.append(outs)
                g.append(two_way_leaky_relu6(outs))
            g2 = []
            for k in range(k_n):
                out = torch.zeros(d)
                for head in range(h):
                    sl = slice(head * dh, (head + 1) * dh)
                    pk = (g[k] @ prop.att)[sl]
                    logits = torch.stack([pk @ (g[j] @ prop.att)[sl] for j in range(k_n)])
                    att = torch.softmax(logits / math.sqrt(dh), 0)
                    out[sl] = sum(att[j] * g[j][sl] for j in range(k_n))
                g2.append(out + g[k])
            c = two_way_leaky_relu6(raw[0] + raw[1])
            z = torch.stack([prop.gate2(two_way_leaky_relu6(prop.gate1(torch.cat([g2[k], c]))))
                             for k in range(k_n)]).squeeze(-1)  # fmt: skip
            beta = torch.softmax(z, 0) * 8
            expect[t] = sum(beta[k] * g2[k] for k in range(k_n))
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


def test_log_without_timestamps_uses_one_slot() -> None:
    log = tiny().log
    plain = InteractionLog(
        user=log.user, item=log.item, behavior=log.behavior, behaviors=log.behaviors,
        target=log.target, user_map=log.user_map, item_map=log.item_map, name="plain",
    )  # fmt: skip
    model = build_model("khgt", {"dim": 4, "item_item_edges": 10}, TrainData(plain))
    assert isinstance(model, KHGT)
    assert model.time_emb.shape == (1, 8) and int(model.ui_slot.max()) == 0
    users, items = model.final_embeddings()
    assert torch.isfinite(users).all() and users.shape == (3, 4) and items.shape == (4, 4)
