"""HPCL4SR (World Wide Web journal 2024): the category graph (Eq. 1-2) on a hand-made sequence set,
the angular-margin InfoNCE (Eq. 15-17) by hand, the classification loss (Eq. 12), the forward pass
against Eq. 3-13 written out, the Table 3 ablations, and the category requirements."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interest_contract import N_GROUPS, sequence_log
from polyrec import losses
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.sequences import SequenceSet
from polyrec.errors import ConfigError
from polyrec.models import TrainData, build_model
from polyrec.models.hpcl4sr import (
    ABLATIONS,
    HPCL4SR,
    HPCL4SRConfig,
    attention_diffusion,
    category_adjacency,
    category_transitions,
    item_categories,
    normalize_category_graph,
)

SMALL = {"dim": 16, "max_len": 8, "n_interests": 3, "batches_per_epoch": 4, "min_history": 2}


def hand_sequences() -> SequenceSet:
    """Category sequences: user 0 [0, 1, 1, 2], user 1 empty, user 2 [2, 0], user 3 [1]."""
    cats = np.array([0, 1, 1, 2, 2, 0, 1])
    indptr = np.array([0, 4, 4, 6, 7])
    return SequenceSet(indptr, np.arange(7), 7, cats)


# ---------------------------------------------------------------------- the category graph


def test_transitions_count_consecutive_categories_within_users() -> None:
    """Transitions 0→1, 1→1, 1→2 (user 0) and 2→0 (user 2); user 0's last category and user 2's
    first (2, 2) are not consecutive in any sequence."""
    t = category_transitions(hand_sequences(), 3)
    assert t.tolist() == [[0, 1, 0], [0, 1, 1], [1, 0, 0]]
    # counts add up over users: the same sequences twice double every count
    s = hand_sequences()
    twice = SequenceSet(
        np.r_[s.indptr, s.indptr[1:] + 7],
        np.r_[s.items, s.items],
        7,
        np.r_[s.categories, s.categories],
    )
    assert (category_transitions(twice, 3) == 2 * t).all()
    with pytest.raises(ValueError, match="no categories"):
        category_transitions(SequenceSet(s.indptr, s.items, 7), 3)


def test_undirected_graph_and_eq1_normalisation_by_hand() -> None:
    a1 = category_adjacency(category_transitions(hand_sequences(), 3))
    # a_01 = 1 (0→1), a_02 = 1 (2→0), a_12 = 1 (1→2), the repeat 1→1 once on the diagonal
    assert a1.tolist() == [[0, 1, 1], [1, 1, 1], [1, 1, 0]]
    a2 = normalize_category_graph(a1)
    # degrees a_i = (2, 3, 2): A2(i, j) = a_ij / sqrt((a_i + 1)(a_j + 1))
    want = np.array(
        [
            [0.0, 1 / math.sqrt(3 * 4), 1 / 3],
            [1 / math.sqrt(4 * 3), 1 / 4, 1 / math.sqrt(4 * 3)],
            [1 / 3, 1 / math.sqrt(3 * 4), 0.0],
        ]
    )
    np.testing.assert_allclose(a2, want, rtol=1e-12)
    no_loops = category_adjacency(category_transitions(hand_sequences(), 3), self_loops=False)
    assert no_loops.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]


def test_directed_graph_normalises_by_out_and_in_degree() -> None:
    a1 = category_adjacency(category_transitions(hand_sequences(), 3), directed=True)
    assert a1.tolist() == [[0, 1, 0], [0, 1, 1], [1, 0, 0]]
    a2 = normalize_category_graph(a1)
    # out-degrees (1, 2, 1), in-degrees (1, 2, 1)
    assert a2[0, 1] == pytest.approx(1 / math.sqrt(2 * 3))
    assert a2[1, 1] == pytest.approx(1 / 3)
    assert a2[1, 2] == pytest.approx(1 / math.sqrt(3 * 2))
    assert a2[2, 0] == pytest.approx(1 / 2)
    assert a2[1, 0] == 0.0


def test_attention_diffusion_eq2() -> None:
    a2 = normalize_category_graph(category_adjacency(category_transitions(hand_sequences(), 3)))
    eye = np.eye(3)
    np.testing.assert_allclose(attention_diffusion(a2, 0.1, 0), eye)  # no hop: A = I
    np.testing.assert_allclose(attention_diffusion(a2, 1.0, 5), eye)  # θ_0 = 1
    # two terms, α = 0.5: θ = (1/2, 1/4) renormalised to (2/3, 1/3)
    np.testing.assert_allclose(attention_diffusion(a2, 0.5, 1), 2 / 3 * eye + 1 / 3 * a2)
    # three terms, α = 0.5: θ = (4/7, 2/7, 1/7)
    want = (4 * eye + 2 * a2 + a2 @ a2) / 7
    np.testing.assert_allclose(attention_diffusion(a2, 0.5, 2), want, rtol=1e-12)
    # the exact series is the limit of the truncated one and solves A = αI + (1 − α) A₂ A
    exact = attention_diffusion(a2, 0.2, None)
    np.testing.assert_allclose(attention_diffusion(a2, 0.2, 400), exact, rtol=1e-9)
    np.testing.assert_allclose(exact, 0.2 * eye + 0.8 * a2 @ exact, rtol=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        attention_diffusion(a2, 0.0, 3)


def test_item_categories_take_each_items_most_frequent_category() -> None:
    log = InteractionLog(
        user=np.zeros(6, dtype=np.int64),
        item=np.array([0, 0, 0, 1, 1, 2]),
        behavior=np.zeros(6, dtype=np.int8),
        behaviors=("click",),
        target="click",
        user_map=IdMap.range(1),
        item_map=IdMap.range(4),
        category=np.array([2, 1, 2, 1, 0, 1]),
        category_map=IdMap.range(3),
    )
    # item 0: 2 twice; item 1: a tie 0 / 1 → 0; item 2: 1; item 3 never seen → -1
    assert item_categories(log).tolist() == [2, 0, 1, -1]


def test_model_graph_is_built_from_the_training_sequences() -> None:
    data = TrainData(sequence_log(n_users=30))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", {**SMALL, "diffusion_hops": 0, "gcn_layers": 1}, data)
    assert isinstance(model, HPCL4SR)
    assert model.diffusion.shape == (N_GROUPS, N_GROUPS)
    torch.testing.assert_close(model.diffusion, torch.eye(N_GROUPS))  # no hop
    cfg = HPCL4SRConfig(**SMALL)
    seqs = SequenceSet.from_log(data.log)
    want = HPCL4SR.category_graph(seqs, N_GROUPS, cfg)
    full = build_model("hpcl4sr", SMALL, data)
    np.testing.assert_allclose(full.diffusion.numpy(), want, rtol=1e-6)  # type: ignore[union-attr]
    # item i belongs to group i // 20: the lookup is +1-shifted, 0 for the padding item and for
    # items the training log never shows
    seen = np.isin(np.arange(100), data.log.item)
    want_lookup = [0] + [1 + i // 20 if seen[i] else 0 for i in range(100)]
    assert not seen.all() and model.item_category.tolist() == want_lookup
    # the graph and the lookup travel with the weights (an export rebuilds the same model)
    assert {"diffusion", "item_category"} <= set(model.state_dict())


# ---------------------------------------------------------------------- losses


def reference_mulcl(a: torch.Tensor, b: torch.Tensor, tau: float, m: float) -> float:
    """Eq. 15-16 written out with loops (one row, K interests per view), ArcFace's fallback
    where θ + m > π; the mean over the 2K anchors."""
    vecs = [v / v.norm() for v in torch.cat([a, b]).double()]
    k = len(a)
    total = 0.0
    for i in range(2 * k):
        star = (i + k) % (2 * k)
        cos = float(vecs[i] @ vecs[star])
        theta = math.acos(max(-1.0, min(1.0, cos)))
        pos = math.cos(theta + m) if theta + m <= math.pi else cos - m * math.sin(m)
        num = math.exp(pos / tau)
        den = num + sum(
            math.exp(float(vecs[i] @ vecs[j]) / tau) for j in range(2 * k) if j not in (i, star)
        )
        total += -math.log(num / den)
    return total / (2 * k)


def test_angular_margin_nce_by_hand() -> None:
    """K = 2 in the plane: a1 at 0°, a2 at 90°, b1 at 30°, b2 at 120°; m = 10°, τ = 0.5.
    Each anchor's positive is 30° away (40° with the margin)."""

    def at(deg: float) -> list[float]:
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    a = torch.tensor([[at(0), at(90)]])
    b = torch.tensor([[at(30), at(120)]])
    tau, m = 0.5, math.radians(10)
    c = lambda deg: math.cos(math.radians(deg))  # noqa: E731
    pos = math.exp(c(40) / tau)

    def term(*neg_degs: float) -> float:
        return -math.log(pos / (pos + sum(math.exp(c(x) / tau) for x in neg_degs)))

    # anchors a1 (negatives a2 at 90°, b2 at 120°), a2 (a1 90°, b1 60°), b1 (a1... a2 60°, b2 90°),
    # b2 (a1 120°, b1 90°)
    want = (term(90, 120) + term(90, 60) + term(60, 90) + term(120, 90)) / 4
    got = losses.angular_margin_nce(a, b, tau, m)
    assert float(got) == pytest.approx(want, rel=1e-6)
    # the vectors' lengths do not matter (Eq. 16 is a cosine)
    assert float(losses.angular_margin_nce(3 * a, 0.5 * b, tau, m)) == pytest.approx(want, rel=1e-6)


def test_margin_zero_is_plain_infonce_eq14() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 8, generator=g), torch.randn(3, 4, 8, generator=g)
    got = losses.angular_margin_nce(a, b, 0.05, 0.0)
    # Eq. 14 for every anchor: positive its partner view, negatives the other 2K − 2 vectors
    z = torch.nn.functional.normalize(torch.cat([a, b], dim=1), dim=-1).double()
    want = []
    for r in range(3):
        for i in range(8):
            star = (i + 4) % 8
            sims = z[r] @ z[r, i] / 0.05
            others = [sims[j] for j in range(8) if j not in (i, star)]
            want.append(-(sims[star] - torch.logsumexp(torch.stack([sims[star], *others]), 0)))
    assert float(got) == pytest.approx(float(torch.stack(want).mean()), rel=1e-5)
    # and the general case matches the loop reference, fallback region included
    for m in (0.0, math.radians(10), 1.0):
        ref = np.mean([reference_mulcl(a[r], b[r], 0.1, m) for r in range(3)])
        assert float(losses.angular_margin_nce(a, b, 0.1, m)) == pytest.approx(ref, rel=1e-5)


def test_angular_margin_fallback_past_pi() -> None:
    """A positive pair 175° apart with m = 10°: θ + m > π, so cos θ − m sin m is used."""
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    b = torch.tensor([[[math.cos(math.radians(175)), math.sin(math.radians(175))], [0.0, 1.0]]])
    m = math.radians(10)
    ref = reference_mulcl(a[0], b[0], 0.5, m)
    assert float(losses.angular_margin_nce(a, b, 0.5, m)) == pytest.approx(ref, rel=1e-6)
    # the margin makes every positive harder: the loss grows with m
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 6, generator=g)
    vals = [float(losses.angular_margin_nce(x, y, 0.1, math.radians(d))) for d in (0, 5, 10, 20)]
    assert vals == sorted(vals) and vals[0] < vals[-1]


def test_angular_margin_nce_rejects_bad_input() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="equal shape"):
        losses.angular_margin_nce(x, torch.randn(2, 2, 4), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        losses.angular_margin_nce(x, x, 0.0)
    with pytest.raises(ValueError, match="margin"):
        losses.angular_margin_nce(x, x, 0.1, 4.0)


def test_category_classification_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])  # second position: no label
    labels = torch.tensor([[0, -1]])
    e2 = math.exp(2)
    p0, p1 = e2 / (e2 + 2), 1 / (e2 + 2)
    ce = -math.log(p0)
    bce = -(math.log(p0) + 2 * math.log(1 - p1))  # Eq. 12: the two wrong classes' (1 − ẑ)
    assert float(losses.category_classification(logits, labels, "ce")) == pytest.approx(ce)
    assert float(losses.category_classification(logits, labels, "bce")) == pytest.approx(bce)
    assert float(losses.category_classification(logits, torch.full((1, 2), -1))) == 0.0
    with pytest.raises(ValueError, match="form"):
        losses.category_classification(logits, labels, "mse")


def test_interest_orthogonality_by_hand() -> None:
    v = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]])
    # cos² of the pairs: (0,1) 1/2, (0,2) 0, (1,2) 1/2; each ordered pair once → mean 1/3
    assert float(losses.interest_orthogonality(v)) == pytest.approx(1 / 3)
    assert float(losses.interest_orthogonality(torch.ones(2, 1, 3))) == 0.0


# ---------------------------------------------------------------------- the model


def test_forward_matches_the_equations() -> None:
    """Eq. 3-13 written out for one history against :meth:`HPCL4SR.encode`."""
    data = TrainData(sequence_log(n_users=30))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", {**SMALL, "gcn_layers": 2}, data)
    assert isinstance(model, HPCL4SR)
    model.eval()
    hist, lengths = SequenceSet.from_log(data.log).padded(np.array([3]), 8, np.array([5]))
    with torch.no_grad():
        views = model.encode(hist, lengths)
        # §4.1: Eq. 3-4 over the category embeddings, Eq. 5-6 over the 5 real positions
        assert model.cat_emb is not None
        h = model.cat_emb
        layers = [h]
        for w in model.gcn:
            h = (model.diffusion @ h) @ w.weight.T + h  # Eq. 3
            layers.append(h)
        table = sum(layers) / 3  # Eq. 4: the mean of the L + 1 = 3 layers
        items = hist[0, 3:] - 1
        hg = table[items // 20]
        assert model.position_mix is not None
        q = model.position_mix[:, 3:] @ hg
        torch.testing.assert_close(views.high[0], q, rtol=1e-5, atol=1e-6)  # type: ignore[index]
        # §4.2: Eq. 7-9 over the real positions (the padding neither attends nor is attended)
        x = model.item_emb.weight[hist[0, 3:]] + model.pos_emb.weight[3:]
        alpha = torch.softmax(x @ x.T, dim=1)
        feats = model.context(x + alpha @ x)
        torch.testing.assert_close(views.features[0, 3:], feats, rtol=1e-5, atol=1e-6)
        # §4.3: Eq. 13
        assert model.fuse is not None
        m = model.fuse(torch.cat([views.high, views.low], dim=-1))  # type: ignore[list-item]
        torch.testing.assert_close(views.interests, m)
        assert views.categories[0].tolist() == [0, 0, 0, *(items // 20 + 1).tolist()]


def test_capsule_routing_gives_k_distinct_interests() -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", {**SMALL, "n_interests": 4}, data)
    assert isinstance(model, HPCL4SR)
    model.eval()
    hist, lengths = SequenceSet.from_log(data.log).padded(np.arange(20), 8)
    with torch.no_grad():
        views = model.encode(hist, lengths)
    for v in (views.low, views.interests):
        assert v.shape == (20, 4, 16)
        for b in range(20):
            dist = torch.cdist(v[b], v[b])[~torch.eye(4, dtype=torch.bool)]
            assert float(dist.min()) > 1e-3 * float(v[b].norm(dim=1).max())


def _batch(model: torch.nn.Module, data: TrainData) -> object:
    return next(iter(model.batches(data, 16, torch.Generator().manual_seed(3))))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("row", "terms"),
    [
        ("base", {"sampled_softmax"}),
        ("base-class", {"sampled_softmax", "category"}),
        ("fusion-add", {"sampled_softmax", "category", "contrastive"}),
        ("fusion-mul", {"sampled_softmax", "category", "contrastive"}),
        ("capsule-reg", {"sampled_softmax", "category", "capsule_reg"}),
        ("no-margin", {"sampled_softmax", "category", "contrastive"}),
        ("hpcl4sr", {"sampled_softmax", "category", "contrastive"}),
    ],
)
def test_table3_ablations_build_and_give_their_terms(row: str, terms: set[str]) -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", {**SMALL, **ABLATIONS[row]}, data)
    out = model.loss(_batch(model, data))
    assert set(out) == terms
    total = torch.stack(list(out.values())).sum()
    assert torch.isfinite(total)
    total.backward()
    assert model.item_emb.weight.grad is not None  # type: ignore[union-attr]
    if ABLATIONS[row].get("high_level") is False:
        assert not any(k.startswith(("cat_emb", "gcn", "fuse")) for k in model.state_dict())


def test_margin_off_lowers_only_the_contrastive_term() -> None:
    data = TrainData(sequence_log(n_users=40))
    out = {}
    for m in (10.0, 0.0):
        torch.manual_seed(0)
        model = build_model("hpcl4sr", {**SMALL, "margin": m}, data)
        out[m] = {k: float(v.detach()) for k, v in model.loss(_batch(model, data)).items()}
    assert out[0.0]["contrastive"] < out[10.0]["contrastive"]
    for key in ("sampled_softmax", "category"):
        assert out[0.0][key] == pytest.approx(out[10.0][key], rel=1e-6)


def test_loss_weights_scale_their_terms() -> None:
    data = TrainData(sequence_log(n_users=40))
    out = {}
    for w in (1.0, 0.5):
        torch.manual_seed(0)
        model = build_model("hpcl4sr", {**SMALL, "lambda_class": w, "lambda_cl": w}, data)
        out[w] = {k: float(v.detach()) for k, v in model.loss(_batch(model, data)).items()}
    for key in ("category", "contrastive"):
        assert out[0.5][key] == pytest.approx(0.5 * out[1.0][key], rel=1e-5)


def test_high_level_view_is_the_positive_option() -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", {**SMALL, "contrast_views": "high-level"}, data)
    assert isinstance(model, HPCL4SR)
    batch = _batch(model, data)
    views = model.encode(batch.history, batch.lengths)  # type: ignore[attr-defined]
    want = losses.angular_margin_nce(views.low, views.high, 0.05, math.radians(10))
    torch.testing.assert_close(model.loss(batch)["contrastive"], want)  # type: ignore[arg-type]


def test_categories_are_required_with_a_clear_error() -> None:
    data = TrainData(sequence_log(n_users=20, categories=False))
    with pytest.raises(ConfigError, match=r"needs item categories.*'category' column"):
        build_model("hpcl4sr", SMALL, data)
    with pytest.raises(ConfigError, match="needs item categories"):
        build_model("hpcl4sr", {**SMALL, **ABLATIONS["base-class"]}, data)
    # items only (Table 3 'base') needs none
    model = build_model("hpcl4sr", {**SMALL, **ABLATIONS["base"]}, data)
    assert set(model.loss(_batch(model, data))) == {"sampled_softmax"}


def test_config_defaults_units_and_consistency() -> None:
    cfg = HPCL4SRConfig()
    assert (cfg.dim, cfg.max_len, cfg.n_interests) == (64, 30, 4)  # §5.1
    assert (cfg.lambda_class, cfg.lambda_cl, cfg.temperature, cfg.margin) == (0.1, 1.0, 0.05, 10.0)
    assert cfg.margin_unit == "degrees" and cfg.margin_radians == pytest.approx(math.pi / 18)
    assert HPCL4SRConfig(margin=0.2, margin_unit="radians").margin_radians == 0.2
    data = TrainData(sequence_log(n_users=20))
    with pytest.raises(ConfigError, match="high_level"):
        build_model("hpcl4sr", {"high_level": False}, data)
    with pytest.raises(ConfigError, match="π"):
        build_model("hpcl4sr", {"margin": 180.0}, data)
    with pytest.raises(ConfigError, match="π"):
        build_model("hpcl4sr", {"margin": 4.0, "margin_unit": "radians"}, data)


def test_unknown_items_get_no_category_at_inference() -> None:
    """An item absent from the training log has category 0 (padding's zero row of Eq. 5)."""
    log = sequence_log(n_users=30)
    keep = log.item != 99  # item 99 never trains
    train = log.select(np.flatnonzero(keep))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", SMALL, TrainData(train))
    assert isinstance(model, HPCL4SR)
    assert int(model.item_category[100]) == 0 and int(model.item_category[99]) == 5
    hist = torch.tensor([[0, 0, 0, 0, 0, 0, 5, 100]])
    with torch.no_grad():
        views = model.encode(hist, torch.tensor([2]))
    assert views.categories[0, -1] == 0 and torch.isfinite(views.interests).all()


@pytest.mark.parametrize(
    "settings",
    [
        {"diffusion": "exact"},
        {"category_graph": "directed", "category_self_loops": False},
        {"class_loss_form": "ce", "gcn_layers": 0},
        {"loss": "full"},
    ],
)
def test_graph_and_loss_options_train(settings: dict[str, object]) -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model("hpcl4sr", {**SMALL, **settings}, data)
    out = model.loss(_batch(model, data))
    total = torch.stack(list(out.values())).sum()
    assert torch.isfinite(total)
    total.backward()
