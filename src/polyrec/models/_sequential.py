"""The shared part of the sequential / multi-interest models (not part of the public API).

:class:`SequentialModel` owns the item table (row 0 = padding, item ``i`` at row ``i + 1``; the
same table embeds histories and scores items, as in ComiRec's code), draws training cuts
(:mod:`polyrec.data.sequences`) and computes the training loss: the interest that best matches
the target (:meth:`SequentialModel.read_out`) is the query of a sampled softmax over
log-uniform negatives (ComiRec §3.5, ``sampled_softmax_loss`` with ``10 · B`` negatives) or of a
full softmax. Subclasses implement :meth:`SequentialModel.interests` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.sequences import (
    CutSampler,
    LogUniformSampler,
    Sampling,
    SeqBatch,
    log_expected_count_unique,
)
from polyrec.data.views import DataSchema, TrainData, sequence_views
from polyrec.models._common import Behaviors, train_behavior
from polyrec.models.base import InterestModel, ModelConfig

# the training objective over the item table: sampled softmax (ComiRec) or the full softmax
SoftmaxLoss = Literal["sampled", "full"]


class SequentialConfig(ModelConfig):
    """Settings every sequential model shares (defaults: ComiRec KDD 2020 §4.1.4)."""

    dim: int = Field(64, ge=1)
    """Embedding size d (ComiRec §4.1.4: d = 64)."""
    max_len: int = Field(20, ge=1)
    """Maximum history length T: the latest T items (ComiRec §4.1.4: 20 on Amazon Book; the Taobao
    setting uses 50)."""
    loss: SoftmaxLoss = "sampled"
    """'sampled': sampled softmax with log-uniform negatives (ComiRec §3.5 Eq. 15 approximated as in
    its code); 'full': softmax over every item."""
    negatives_per_row: int = Field(10, ge=1)
    """Negatives drawn per batch row, S = this · B (ComiRec code: neg_num = 10)."""
    unique_negatives: bool = False
    """Draw the S negatives without repetition and correct the logits by each item's expected count in
    such a sample, ln(1 − (1 − P)^tries) — TensorFlow's log_uniform_candidate_sampler(unique=True),
    which ComiRec's code uses. Default: S draws with replacement corrected by ln(S·P) (Jean et al.
    2015); both estimate the full softmax, the unique sample holds more distinct items (about 1,280
    against 670 of 12k Beauty items)."""
    sampling: Sampling = "random-cut"
    """Training cuts: 'random-cut' (ComiRec's iterator: random user, random cut) or 'all-cuts' (every
    prefix of every user once per epoch)."""
    min_history: int = Field(4, ge=1)
    """Smallest cut position for 'random-cut' (ComiRec code: range(4, len))."""
    batches_per_epoch: int = Field(1000, ge=1)
    """'random-cut' batches per trainer epoch, i.e. between validations (ComiRec code: test_iter =
    1000)."""
    behaviors: Behaviors = "target"
    """Sequences of the target behavior only ('target') or of every behavior."""


class SequentialModel(InterestModel):
    """Base of the sequential models: item table, training cuts, sampled-softmax loss."""

    config: SequentialConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.dim = config.dim
        self.max_len = config.max_len
        self.item_emb = nn.Embedding(self.n_items + 1, config.dim, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=1.0 / math.sqrt(config.dim))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        # the negative sampler's log-probabilities (training only: zeros when restored)
        log_q = log1m_q = torch.zeros(self.n_items)
        if data is not None:
            sampler = self._views(data)[1]
            log_q, log1m_q = sampler.log_q.clone(), sampler.log1m_q.float()
        self.log_q: Tensor
        self.register_buffer("log_q", log_q, persistent=False)
        self.log1m_q: Tensor  # ln(1 − P(i)), for unique negatives' expected counts
        self.register_buffer("log1m_q", log1m_q, persistent=False)

    # ------------------------------------------------------------------ data
    def _views(self, data: TrainData) -> tuple[CutSampler, LogUniformSampler]:
        return sequence_views(
            data,
            train_behavior(data.schema, self.config.behaviors),
            max_len=self.max_len,
            min_history=self.config.min_history,
        )

    def n_batches(self, data: TrainData, batch_size: int) -> int:
        if self.config.sampling == "random-cut":
            return self.config.batches_per_epoch
        return math.ceil(self._views(data)[0].n_cuts / batch_size)

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[SeqBatch]:
        cuts, neg_sampler = self._views(data)
        chunks: Iterator[tuple[np.ndarray, np.ndarray]]
        if self.config.sampling == "random-cut":
            chunks = (
                cuts.random_cuts(batch_size, generator)
                for _ in range(self.config.batches_per_epoch)
            )
        else:
            users, ks = cuts.all_cuts(generator)
            chunks = (
                (users[s : s + batch_size], ks[s : s + batch_size])
                for s in range(0, len(users), batch_size)
            )
        for u, k in chunks:
            hist, lengths, target = cuts.make(u, k)
            negs, tries = None, None
            if self.config.loss == "sampled":
                size = self.config.negatives_per_row * len(target)
                if self.config.unique_negatives:
                    negs, tries = neg_sampler.sample_unique(size, generator)
                else:
                    negs = neg_sampler.sample(size, generator)
            times = cuts.times(u, k) if self.uses_times else None
            yield SeqBatch(hist, lengths, target, negs, torch.from_numpy(u), tries, times)

    # ------------------------------------------------------------------ model
    def item_embeddings(self) -> Tensor:
        return self.item_emb.weight[1:]

    def read_out(self, interests: Tensor, target_emb: Tensor) -> Tensor:
        """The training query ``[B, d]``: the interest with the largest inner product with the
        target item (ComiRec §3.5 Eq. 14, argmax); single-interest models return it as is."""
        if interests.shape[1] == 1:
            return interests[:, 0]
        att = (interests * target_emb.unsqueeze(1)).sum(-1)
        best = att.argmax(dim=1)
        return interests[torch.arange(len(best), device=best.device), best]

    def loss(self, batch: SeqBatch) -> dict[str, Tensor]:
        interests = self.interests_at(batch.history, batch.lengths, batch.times)
        return self.recommendation_loss(interests, batch)

    def recommendation_loss(self, interests: Tensor, batch: SeqBatch) -> dict[str, Tensor]:
        """The next-item loss of a batch given its interests ``[B, K, d]``."""
        return self.next_item_loss(interests, batch, self.item_embeddings())

    def next_item_loss(
        self,
        interests: Tensor,
        batch: SeqBatch,
        items: Tensor,
        negative_rows: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """:meth:`recommendation_loss` on the caller's :meth:`item_embeddings` ``items`` and,
        optionally, their rows of the batch's negatives (``negative_rows =
        items[batch.negatives]``): a caller that gathers these rows too (Re4) shares one gather,
        so one sparse gradient into the item table."""
        query = self.read_out(interests, items[batch.target])
        if self.config.loss == "full" or batch.negatives is None:
            return {"softmax": losses.full_softmax(query, items, batch.target)}
        return {
            "sampled_softmax": losses.sampled_softmax(
                query,
                items,
                batch.target,
                batch.negatives,
                self.negative_log_q(batch),
                negative_weight=negative_rows,
            )
        }

    def negative_log_q(self, batch: SeqBatch) -> Tensor:
        """``[n_items]`` log of each item's expected count in the batch's negative sample (the
        sampled-softmax correction); the batch must carry negatives."""
        assert batch.negatives is not None
        if batch.tries is not None:  # unique sample: TensorFlow's expected counts
            return log_expected_count_unique(self.log1m_q, batch.tries)
        # log of the expected count of each item among the S draws with replacement
        return self.log_q + math.log(batch.negatives.numel())


def latest(histories: Tensor, lengths: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """The latest ``max_len`` positions of left-padded histories ``[B, T]`` and their lengths."""
    if histories.shape[1] > max_len:
        return histories[:, -max_len:], lengths.clamp(max=max_len)
    return histories, lengths


def key_padding(lengths: Tensor, t: int) -> Tensor:
    """``[B, T]`` bool, True at the (left) padding positions."""
    col = torch.arange(t, device=lengths.device).unsqueeze(0)
    return col < (t - lengths).unsqueeze(1)


__all__ = ["SequentialConfig", "SequentialModel", "key_padding", "latest"]
