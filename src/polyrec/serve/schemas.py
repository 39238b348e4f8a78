"""Request and response bodies of ``polyrec serve`` (pydantic; unknown fields are errors).

Ids are JSON integers or strings, exactly as in the dataset (``42`` and ``"42"`` both find an
integer id). No fastapi import here, so the schemas can be used without the ``serve`` extra.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)


def _unicode(value: str) -> str:
    """A text id must be valid Unicode: a lone surrogate (``"\ud800"``) cannot be encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_unicode)]
Id = Annotated[StrictInt | Text, Field(description="an external user or item id")]
MAX_LIST = 100_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Request):
    """Top-k items for a known user, or (interest models) for a history of items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user": 42, "k": 10}, {"history": [5, 17, 3], "k": 20}]},
    )

    user: Id | None = Field(
        None, description="a user id; an unknown user gets the popularity fallback"
    )
    history: list[Id] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LIST,
        description="item ids, oldest first (interest models only; the latest max_len are used)",
    )
    k: StrictInt = Field(20, ge=1, description="number of items (at most the server's max_k)")
    exclude_seen: StrictBool = Field(
        True,
        description="remove the user's seen items (target behavior) or the history's items",
    )
    allow: list[Id] | None = Field(
        None, max_length=MAX_LIST, description="only recommend among these items"
    )
    deny: list[Id] | None = Field(
        None, max_length=MAX_LIST, description="never recommend these items"
    )


class BatchRequest(_Request):
    """Several recommendation requests answered together (at most the server's max_batch)."""

    requests: list[RecommendRequest] = Field(min_length=1)


class SimilarItemsRequest(_Request):
    """Items whose embeddings have the largest inner product with the item's (itself excluded)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"item": 7, "k": 10}]}
    )

    item: Id
    k: StrictInt = Field(20, ge=1, description="number of items (at most the server's max_k)")
    allow: list[Id] | None = Field(None, max_length=MAX_LIST)
    deny: list[Id] | None = Field(None, max_length=MAX_LIST)


class RecommendResponse(BaseModel):
    user: Id | None = Field(None, description="the user of the request (null for a history)")
    items: list[Id] = Field(description="item ids, best first")
    scores: list[float] = Field(description="the model's score of each item")
    fallback: str | None = Field(
        None, description="'popularity' when the user is unknown or has no history, else null"
    )


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class SimilarItemsResponse(BaseModel):
    item: Id
    items: list[Id]
    scores: list[float]


class Health(BaseModel):
    status: str
    model: str
    items: int
    users: int


class ModelInfo(BaseModel):
    name: str
    kind: str = Field(description="'embedding' (users by id) or 'interest' (users by history)")
    paper: str
    scoring: str
    interests: int
    dim: int
    max_len: int | None
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, Any]
    index: dict[str, Any]
    search: str = Field(description="'faiss' or 'torch'")
    limits: dict[str, int]
    exported: str | None


class ErrorBody(BaseModel):
    error: str = Field(description="one line naming the problem")


__all__ = [
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "Health",
    "ModelInfo",
    "RecommendRequest",
    "RecommendResponse",
    "SimilarItemsRequest",
    "SimilarItemsResponse",
]
