"""NMTR (Gao et al., ICDE 2019): the cascade of logits, the NCF tower, the labels, the sampled
negatives, the multi-task log loss and the chunked full-ranking scorer against their
definitions on a hand-made log."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyrec import losses
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.errors import ConfigError
from polyrec.models.nmtr import NMTR, NMTRConfig, tower_widths

# behaviors view (0), cart (1), buy (2); users 0-3, items 0-5
ROWS = [(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 2, 0), (1, 2, 2), (2, 3, 0), (2, 4, 1),
        (2, 4, 2), (3, 0, 0), (3, 5, 2)]  # fmt: skip


def tiny() -> TrainData:
    u, i, b = (np.array(x) for x in zip(*ROWS, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "cart", "buy"),
        target="buy", user_map=IdMap.range(4), item_map=IdMap.range(6), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def model(**cfg: object) -> NMTR:
    torch.manual_seed(0)
    m = NMTR(NMTRConfig.model_validate({"dim": 4, **cfg})).setup(tiny())
    with torch.no_grad():
        m.item_bias.copy_(torch.linspace(-0.3, 0.4, 6))  # non-zero, so the bias term counts
    return m


def test_the_cascade_averages_each_stage_with_the_previous_and_re_adds_the_bias() -> None:
    m = model()
    t = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])
    b = torch.tensor([0.2, -0.4])
    s = m.cascade(t, b)
    # s_view = t1 + b; s_cart = (t2 + s_view)/2 + b; s_buy = (t3 + s_cart)/2 + b
    for n in range(2):
        t1, t2, t3 = t[n].tolist()
        bb = float(b[n])
        view = t1 + bb
        cart = (t2 + view) / 2 + bb
        buy = (t3 + cart) / 2 + bb
        assert s[n].tolist() == pytest.approx([view, cart, buy])
        assert buy == pytest.approx(t3 / 2 + t2 / 4 + t1 / 4 + 1.75 * bb)


def test_the_ncf_tower_reads_p_q_and_their_product() -> None:
    m = model()
    assert tower_widths("ncf", 4, 1) == [12, 6]
    p, q = torch.randn(3, 4), torch.randn(3, 4)
    t = m.tower_logits(p, q)
    for k, tower in enumerate(m.towers):
        lin = tower[0]
        want = torch.relu(torch.cat([p, q, p * q], -1) @ lin.weight.T + lin.bias) @ m.h[k]
        torch.testing.assert_close(t[:, k], want)
    g = model(base="gmf")
    w = g.towers[0][0].weight
    assert g.towers[0][0].bias is None and w.shape == (4, 4)
    torch.testing.assert_close(g.tower_logits(p, q)[:, 0], torch.relu((p * q) @ w.T) @ g.h[0])


@pytest.mark.parametrize(("base", "n_layers"), [("ncf", 1), ("ncf", 2), ("mlp", 2), ("gmf", 1)])
def test_full_ranking_scores_are_the_target_logit_of_every_pair_whatever_the_chunks(
    base: str, n_layers: int
) -> None:
    m = model(score_budget=1024, base=base, n_layers=n_layers)  # forces chunks
    users = torch.tensor([0, 2, 3, 1])
    got = m.scores(users)
    u = users[:, None].expand(-1, 6).reshape(-1)
    i = torch.arange(6).repeat(4)
    want = m.logits(u, i)[:, -1].view(4, 6)
    torch.testing.assert_close(got, want.detach())
    big = model(score_budget=1 << 20, base=base, n_layers=n_layers)
    torch.testing.assert_close(big.scores(users), got)


def test_labels_by_membership_and_by_the_official_count() -> None:
    users, items, labels = model().positives(tiny())
    got = {
        (int(u), int(i)): tuple(y.tolist()) for u, i, y in zip(users, items, labels, strict=True)
    }
    assert got[(0, 1)] == (1.0, 1.0, 1.0)
    assert got[(1, 2)] == (1.0, 0.0, 1.0)  # viewed and bought, never carted
    assert got[(3, 5)] == (0.0, 0.0, 1.0)  # bought only
    assert len(got) == 7  # distinct pairs of any behavior
    _, _, counted = model(labels="count").positives(tiny())
    by_count = {k: tuple(y.tolist()) for k, y in zip(got, counted, strict=True)}
    assert by_count[(1, 2)] == (1.0, 1.0, 0.0)  # two behaviors: the first two stages
    assert by_count[(3, 5)] == (1.0, 0.0, 0.0)


def test_an_epoch_holds_every_positive_and_fresh_negatives_outside_every_behavior() -> None:
    m, data = model(negatives=3), tiny()
    batches = list(m.batches(data, 5, torch.Generator().manual_seed(1)))
    assert len(batches) == m.n_batches(data, 5) == math.ceil(7 * 4 / 5)
    u = torch.cat([b.user for b in batches])
    i = torch.cat([b.item for b in batches])
    y = torch.cat([b.label for b in batches])
    seen = {(a, b) for a, b, _ in ROWS}
    pos = y.sum(1) > 0
    assert {(int(a), int(b)) for a, b in zip(u[pos], i[pos], strict=True)} == seen
    assert int(pos.sum()) == 7 and int((~pos).sum()) == 21
    assert not any((int(a), int(b)) in seen for a, b in zip(u[~pos], i[~pos], strict=True))


def test_the_multitask_log_loss_is_the_weighted_mean_log_loss() -> None:
    s = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-0.5, 1.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lam = torch.tensor([0.25, 0.75])
    want = 0.0
    for k in range(2):
        ll = [
            -(
                yy * math.log(1 / (1 + math.exp(-ss)))
                + (1 - yy) * math.log(1 - 1 / (1 + math.exp(-ss)))
            )
            for ss, yy in zip(s[:, k].tolist(), y[:, k].tolist(), strict=True)
        ]
        want += float(lam[k]) * sum(ll) / 3
    assert float(losses.multitask_log_loss(s, y, lam)) == pytest.approx(want, rel=1e-6)
    # the model's loss is that function of its logits with λ = 1/3 each
    m, data = model(), tiny()
    batch = next(iter(m.batches(data, 64, torch.Generator().manual_seed(0))))
    out = m.loss(batch)
    third = torch.full((3,), 1 / 3)
    want_model = losses.multitask_log_loss(m.logits(batch.user, batch.item), batch.label, third)
    torch.testing.assert_close(out["log_loss"], want_model)


def test_training_lowers_the_loss_and_ranks_bought_items_up() -> None:
    m, data = model(dim=8), tiny()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    first = last = 0.0
    for epoch in range(60):
        total = 0.0
        for batch in m.batches(data, 64, g):
            loss = sum(m.loss(batch).values())
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            total += float(loss.detach())  # type: ignore[union-attr]
        first = total if epoch == 0 else first
        last = total
    assert last < 0.5 * first
    with torch.no_grad():
        s = m.scores(torch.tensor([0]))[0]
    assert int(s.argmax()) == 1  # user 0 bought item 1


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="n_layers"):
        model(base="gmf", n_layers=2)
    with pytest.raises(ConfigError, match="task_weight"):
        model(task_weight={"click": 1.0})
    with pytest.raises(ConfigError, match="behavior_order"):
        model(behavior_order=["buy", "view"])
