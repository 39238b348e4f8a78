"""YouTube DNN (Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016)
as the single-interest baseline of ComiRec: mean pooling of the history's item embeddings."""

from __future__ import annotations

from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._sequential import SequentialConfig, SequentialModel


class YouTubeDNNConfig(SequentialConfig):
    """Settings of :class:`YouTubeDNN` (defaults: ComiRec KDD 2020 §4.1.4 baseline setting)."""

    dense: bool = True
    """One dense layer (d → d, no activation) after the mean pooling, as ComiRec's Model_DNN baseline;
    False: the pooled embedding itself (YouTube DNN §3.3 'averaged embeddings' feeding the tower).
    """


class YouTubeDNN(
    SequentialModel,
    name="youtube-dnn",
    paper="Covington et al., RecSys 2016",
    Config=YouTubeDNNConfig,
):
    """YouTube DNN candidate generation (RecSys 2016 §3): the user vector is the average of the
    watched items' embeddings (§3.3), followed by a dense layer; one interest (K = 1).
    Trained with sampled softmax over items (§3.2) on ComiRec's (prefix → next item) cuts."""

    config: YouTubeDNNConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        self.dense = nn.Linear(config.dim, config.dim) if config.dense else None

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        emb = self.item_emb(histories)  # padding rows are zero
        mean = emb.sum(1) / lengths.clamp(min=1).unsqueeze(1).to(emb.dtype)
        out = self.dense(mean) if self.dense is not None else mean
        return out.unsqueeze(1)
