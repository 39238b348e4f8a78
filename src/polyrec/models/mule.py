"""MuLe: multi-grained graph learning over unified, behavior-specific and target-conditioned
graphs, fused by a multi-grained attention (Lee et al., CIKM 2024)."""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.graphs import edge_pattern, normalized_bipartite_adjacency
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import BPRScorer, GraphScorer, Init, bpr_terms, embedding_tables
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import edge_dot, edge_spmm, spmm

TDAForm = Literal["code", "receiver"]
MGAActivation = Literal["none", "tanh", "leaky_relu"]


class MuLeConfig(ModelConfig):
    """Settings of :class:`MuLe`. The paper (CIKM 2024) is not in this repository; the values are
    those its authors publish with the code (geonwooko/MULE README and run scripts), named below."""

    dim: int = Field(64, ge=1)
    """Embedding size d (README: 64 on every dataset)."""
    light_layers: int = Field(1, ge=0)
    """Layers L_light of every LightGCN-style encoder: unified, behavior-specific and
    target-intersected graphs (README: 1 on Taobao, Tmall and JData)."""
    tda_layers: int = Field(4, ge=0)
    """Layers L_tda of the target-guided denoising attention on each target-complemented graph
    (README: 4 on Taobao, 5 on Tmall and JData; the scripts' default 4)."""
    tda_form: TDAForm = "code"
    """How a TDA layer weighs an edge k–q: 'code' (the released implementation: the score
    ⟨e_t[k], x[q]⟩ is softmax-normalised over the *sender* k's neighbours and the message added at
    the receiver q) or 'receiver' (the paper's Fig. 2 reading: the receiver q scores its
    neighbours with its own target embedding, ⟨e_t[q], x[k]⟩, softmax over q's neighbours)."""
    mga_activation: MGAActivation = "none"
    """Non-linearity between MGA's linear score and its softmax: 'none' (the released code;
    the key and bias then cancel in the softmax, so the weights depend on the candidate alone
    and stage 1 has no effect on the output), 'tanh' or 'leaky_relu' (a target-aware key)."""
    reg: float = Field(0.0, ge=0.0)
    """λ of an L2 penalty on the batch's free embeddings (LightGCN form). 0: the released code
    regularises only through Adam's ``weight_decay`` (``train.weight_decay``: Tmall 1e-5, Taobao
    and JData 0)."""
    init: Init = "xavier"
    """Embedding init (the released code: xavier_uniform on both tables)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""


def own_nodes(r: sp.csr_matrix, n_users: int) -> tuple[sp.csr_matrix, Tensor]:
    """``r`` restricted to the users and items with an edge, and those nodes' ids in the full
    node table (users first, then items)."""
    users, items = np.flatnonzero(r.getnnz(axis=1)), np.flatnonzero(r.getnnz(axis=0))
    nodes = torch.from_numpy(np.concatenate([users, items + n_users])).long()
    return r[users][:, items], nodes


def layer_sum(x: Tensor, layers: list[Tensor]) -> Tensor:
    """The encoders' output: the input plus Σ_l x⁽ˡ⁾ / l (x⁽ˡ⁾ row-L2-normalised layer outputs;
    the released code's combination, not LightGCN's mean)."""
    out = x
    for depth, layer in enumerate(layers, start=1):
        out = out + layer / depth
    return out


def edge_softmax(scores: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Softmax of edge ``scores`` within each ``group`` (vectorised, max-shifted)."""
    top = torch.full((n_groups,), -torch.inf, dtype=scores.dtype, device=scores.device)
    top = top.scatter_reduce(0, group, scores.detach(), reduce="amax", include_self=True)
    e = torch.exp(scores - top[group])
    total = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add(0, group, e)
    return e / total[group]


class MuLe(
    BPRScorer,
    GraphScorer,
    name="mule",
    paper=("Lee et al., Multi-Grained Graph Learning for Multi-Behavior Recommendation, CIKM 2024"),
    Config=MuLeConfig,
):
    """MuLe (Lee, Ko, Song, Jung, "Multi-Grained Graph Learning for Multi-Behavior
    Recommendation", CIKM 2024).

    **Graphs (§3.1).** From the training interactions (distinct pairs, binary edges, no self
    loops): the *unified* graph G_uni over every behavior merged; one *behavior-specific* graph
    G_b per behavior, the target t included; and for each auxiliary behavior b its
    *target-intersected* graph G_{b∩t} (b-pairs also bought in training) and
    *target-complemented* graph G_{b∖t} (b-pairs not bought), which partition G_b. The
    LightGCN-style graphs use Â = D^{-1/2} A D^{-1/2} of their own degrees.

    **Multi-grained encoders (§3.2), cascaded.** One propagation operator per graph,
    ``Enc(x) = x + Σ_{l=1..L} x⁽ˡ⁾ / l`` with ``x⁽ˡ⁾ = norm(P x⁽ˡ⁻¹⁾)`` (row L2 normalisation,
    :func:`layer_sum`)::

        E_uni   = Enc_light(E⁽⁰⁾; G_uni)             (unified: every behavior)
        E_b     = Enc_light(E_uni; G_b)              (each behavior, the target's E_t included)
        E_{b∩t} = Enc_light(E_b; G_{b∩t})            (what was bought after b)
        E_{b∖t} = Enc_TDA(E_b; G_{b∖t}, guide E_t)   (what b touched but was not bought: denoised)

    **Target-guided denoising attention (TDA).** On G_{b∖t} an edge's weight is a softmax of
    the inner product of the target embedding E_t and the layer input (``tda_form``; 'code'
    groups the softmax by the sending node as the released implementation does), so edges that
    look unlike purchases pass little. The guide E_t is not detached.

    **Multi-grained attention (MGA, §3.3).** Shared by users and items. Stage 1 attends over
    [E_b for every b, E_t] with the key E_t, giving Z̃; stage 2 over [E_{b∖t}…, E_{b∩t}…] with
    the key Z̃, giving the final Z = Σ_j β_j E_j; each score is ``wᵀ[key ‖ candidate] + c``
    (``mga_activation`` between score and softmax). Prediction ŷ_ui = z_uᵀ z_i (§3.4).

    **Training (§3.4).** BPR on target pairs, one uniform negative outside the user's training
    purchases, Adam; regularisation by Adam's weight decay (``train.weight_decay``) and
    optionally the batch L2 ``reg``. Every batch re-runs the full cascade.

    **Choices where the paper is silent or differs from the released code** (the paper itself
    could not be read here; these details come from the authors' code and its README, and each
    is a config option or stated): the encoder combination ``x + Σ norm(·)/l`` (the code's; the
    paper names LightGCN); the TDA grouping (``tda_form``: 'code' default, 'receiver' as Fig. 2
    reads); MGA without a non-linearity (``mga_activation='none'``, the code's: its key is then
    inert); no auxiliary behavior in the data leaves no stage-2 candidate, so Z = E_t (the
    model reduces to a two-level LightGCN-style encoder; the paper always has auxiliaries). The
    released code trains 100 epochs and tests the last; polyrec selects the epoch on validation.
    Its evaluation averages over test *pairs* with a misaligned NDCG denominator; polyrec's
    averages over users (JData and Tmall have several test purchases per user, so published
    and polyrec NDCG differ slightly).
    """

    config: MuLeConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.target = schema.target
        self.train_behavior = schema.target
        self.aux = tuple(b for b in schema.behaviors if b != schema.target)
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        assert data is not None  # not rebuildable: setup() always passes the data
        target = data.csr(schema.target)  # TrainData.csr is binary: distinct pairs
        graphs: dict[str, sp.csr_matrix] = {"uni": data.csr(None)}
        graphs |= {f"b_{b}": data.csr(b) for b in schema.behaviors}
        for b in self.aux:
            graphs[f"and_{b}"] = graphs[f"b_{b}"].multiply(target).tocsr()
        names = []
        for key, r in graphs.items():  # each graph on its own nodes (those with an edge)
            local, nodes = own_nodes(r, self.n_users)
            adj = normalized_bipartite_adjacency(local)
            self.register_buffer(f"adj_{key}", adj, persistent=False)
            self.register_buffer(f"nodes_{key}", nodes, persistent=False)
            names += [f"adj_{key}", f"nodes_{key}"]
        for b in self.aux:  # G_{b∖t} on its own nodes: both directions, entry (receiver, sender)
            r = (graphs[f"b_{b}"] - graphs[f"and_{b}"]).tocsr()
            r.eliminate_zeros()
            local, nodes = own_nodes(r, self.n_users)
            pattern, rows, rev = edge_pattern(local)
            parts = {"tda": pattern, "rev": rev, "row": rows, "tnodes": nodes}
            for part, t in parts.items():
                self.register_buffer(f"{part}_{b}", t, persistent=False)
                names.append(f"{part}_{b}")
        self._ddp_params_and_buffers_to_ignore = names
        # MGA: one scorer per stage, wᵀ[key ‖ candidate] + c (Linear(2d → 1), Xavier weight)
        stages = [nn.Linear(2 * config.dim, 1) for _ in range(2)]
        for lin in stages:
            nn.init.xavier_uniform_(lin.weight)
        self.mga = nn.ModuleList(stages)

    # ------------------------------------------------------------------ encoders
    def light(self, key: str, x: Tensor) -> Tensor:
        """Enc_light(x; G_key): x + Σ_l norm(Â x⁽ˡ⁻¹⁾) / l, computed on the graph's own nodes (a
        node without an edge there gets zero layers, so its output is its input)."""
        adj: Tensor = getattr(self, f"adj_{key}")
        nodes: Tensor = getattr(self, f"nodes_{key}")
        whole = len(nodes) == x.shape[0]  # every node has an edge: no gather / scatter
        h = x if whole else x[nodes]
        layers = []
        for _ in range(self.config.light_layers):
            h = F.normalize(spmm(adj, h, symmetric=True), dim=-1)
            layers.append(h)
        if not layers:
            return x
        if whole:
            return layer_sum(x, layers)
        return x.index_add(0, nodes, layer_sum(torch.zeros_like(h), layers))

    def tda(self, behavior: str, x: Tensor, guide: Tensor) -> Tensor:
        """Enc_TDA(x; G_{b∖t}, E_t): attention-weighted propagation over the complemented
        graph, weights from the target embedding ``guide``. Runs on the graph's own nodes (a
        node without an edge there gets zero layers, so its output is its input); an entry
        (q, k) of the pattern is the edge that carries k's message to q."""
        pattern: Tensor = getattr(self, f"tda_{behavior}")
        rev: Tensor = getattr(self, f"rev_{behavior}")
        nodes: Tensor = getattr(self, f"tnodes_{behavior}")
        code = self.config.tda_form == "code"
        # 'code': score ⟨e_t[k], h[q]⟩, softmax over each sender k's edges;
        # 'receiver': score ⟨e_t[q], h[k]⟩, softmax over each receiver q's edges
        group = pattern.col_indices() if code else getattr(self, f"row_{behavior}")
        g, h = guide[nodes], x[nodes]  # the guide is fixed across layers
        layers = []
        for _ in range(self.config.tda_layers):
            score = edge_dot(pattern, rev, h, g) if code else edge_dot(pattern, rev, g, h)
            alpha = edge_softmax(score, group, len(nodes))
            h = F.normalize(edge_spmm(pattern, rev, alpha, h), dim=-1)
            layers.append(h)
        if not layers:
            return x
        return x.index_add(0, nodes, layer_sum(torch.zeros_like(h), layers))

    def attend(self, stage: int, key: Tensor, candidates: list[Tensor]) -> Tensor:
        """MGA stage: Σ_j softmax_j(act(wᵀ[key ‖ c_j] + b)) c_j, per node; the linear score is
        split as w_kᵀkey + w_cᵀc_j + b (no [N, J, 2d] concatenation)."""
        lin = cast(nn.Linear, self.mga[stage])
        d = key.shape[1]
        w = lin.weight.squeeze(0)
        base = key @ w[:d] + lin.bias  # [N]
        score = torch.stack([c @ w[d:] for c in candidates], dim=1) + base.unsqueeze(1)
        act = self.config.mga_activation
        if act == "tanh":
            score = torch.tanh(score)
        elif act == "leaky_relu":
            score = F.leaky_relu(score)
        weights = torch.softmax(score, dim=1)
        out = weights[:, 0:1] * candidates[0]
        for j, c in enumerate(candidates[1:], start=1):
            out = out + weights[:, j : j + 1] * c
        return out

    def encode(self) -> Tensor:
        """The final node table Z (users first, then items)."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)  # E⁽⁰⁾
        uni = self.light("uni", ego)
        per = {b: self.light(f"b_{b}", uni) for b in (*self.aux, self.target)}
        e_t = per[self.target]
        if not self.aux:
            return e_t
        inter = [self.light(f"and_{b}", per[b]) for b in self.aux]
        comp = [self.tda(b, per[b], e_t) for b in self.aux]
        z_tilde = self.attend(0, e_t, [per[b] for b in self.aux] + [e_t])  # stage 1
        return self.attend(1, z_tilde, comp + inter)  # stage 2

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        users, items = torch.split(self.encode(), [self.n_users, self.n_items], dim=0)
        return users, items

    # ------------------------------------------------------------------ training
    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()
        return bpr_terms((self.user_emb, self.item_emb), users, items, batch, self.config.reg)


__all__ = ["MuLe", "MuLeConfig"]
