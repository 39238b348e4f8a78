"""HeCo on the behavior graph: the co-contrast loss, the network-schema view's attention and the
meta-path graphs by hand (HeCo KDD 2021, Eq. 2-7 and 9-10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from polyrec import losses
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models import build_model
from polyrec.models.heco import HeCo

N_USERS, N_ITEMS = 3, 4


def tiny() -> TrainData:
    # view: u0 {0, 1}, u1 {1}, u2 {3}; buy: u0 {1}, u1 {1, 2}, u2 {3}
    rows = [(0, 0, 0), (0, 1, 0), (1, 1, 0), (2, 3, 0), (0, 1, 1), (1, 2, 1), (1, 1, 1),
            (2, 3, 1)]  # fmt: skip
    u, i, b = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "buy"), target="buy",
        user_map=IdMap.range(N_USERS), item_map=IdMap.range(N_ITEMS), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def test_multi_positive_nce_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    pos = torch.tensor([[True, True, False], [False, True, False], [False, False, True]])
    tau = 0.5
    total = 0.0
    for i in range(3):
        e = [math.exp(float(F.cosine_similarity(a[i], b[j], dim=0)) / tau) for j in range(3)]
        total += -math.log(sum(e[j] for j in range(3) if pos[i, j]) / sum(e))
    got = losses.multi_positive_nce(a, b, pos, tau)
    assert float(got) == pytest.approx(total / 3, rel=1e-5)
    with pytest.raises(ValueError, match="positive per row"):
        losses.multi_positive_nce(a, b, torch.zeros(3, 3, dtype=torch.bool), tau)


def model() -> HeCo:
    torch.manual_seed(0)
    m = build_model("heco", {"dim": 4, "feat_drop": 0.0, "n_neighbours": 5, "n_positives": 2},
                    tiny())  # fmt: skip
    assert isinstance(m, HeCo)
    return m.eval()


def test_schema_view_by_hand() -> None:
    """User 0: behavior view reaches items 0 and 1, buy item 1; node-level attention
    softmax_j LeakyReLU(a_bᵀ[h_u ‖ h_j]) per behavior, ELU of the weighted sum, then the
    behavior-level attention β = softmax_b mean_u a_scᵀ tanh(W h_u^b + b)."""
    m = model()
    data = tiny()
    with torch.no_grad():
        hu, hi = m.features()
        zu, _ = m.schema_view(torch.cat([hu, hi]))
        per_b = []
        for b_code, b in enumerate(("view", "buy")):
            r = data.csr(b).toarray()
            rows = []
            for u in range(N_USERS):
                items = np.flatnonzero(r[u])
                a = m.att_node[0, b_code]
                logits = torch.stack([F.leaky_relu(a @ torch.cat([hu[u], hi[j]])) for j in items])
                w = torch.softmax(logits, 0)
                rows.append(F.elu(sum(w[k] * hi[j] for k, j in enumerate(items))))
            per_b.append(torch.stack(rows))
        att = m.sc_att[0]
        scores = torch.stack([(torch.tanh(att.lin(v)).mean(0) * att.a[0]).sum() for v in per_b])
        beta = torch.softmax(scores, 0)
        expect = beta[0] * per_b[0] + beta[1] * per_b[1]
    torch.testing.assert_close(zu, expect, rtol=1e-5, atol=1e-6)


def test_metapath_graphs_and_positives() -> None:
    """U–buy–I–buy–U: users 0 and 1 share item 1; user 2 shares nothing, so its row of
    D^{-1/2}(A + I)D^{-1/2} holds only itself. Positives: each user's most similar user."""
    m = model()
    users_buy = m.mp_graph_1.to_dense().numpy()  # type 0 (users), behavior 1 (buy)
    a = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float64)
    deg = a.sum(1)
    np.testing.assert_allclose(users_buy, a / np.sqrt(np.outer(deg, deg)), rtol=1e-6)
    mask = m._positive_mask(0, torch.arange(3), 3).numpy()
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    # the final embeddings are the meta-path view's
    with torch.no_grad():
        zu, zi = m.final_embeddings()
        ref_u, ref_i = m.metapath_view(*m.features())
    torch.testing.assert_close(zu, ref_u)
    torch.testing.assert_close(zi, ref_i)
    assert sp.issparse(sp.csr_matrix(users_buy))
