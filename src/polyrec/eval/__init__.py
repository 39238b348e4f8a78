"""Evaluation: metrics, the batched top-k core, the protocols (full ranking, sampled 1+N,
multi-interest retrieval), the evaluator and the leakage audit."""

from polyrec.eval.audit import LeakageError, audit_split
from polyrec.eval.evaluator import evaluate, metric_value
from polyrec.eval.protocols import EvalProtocol, FullRanking, SampledRanking
from polyrec.eval.retrieval import Retrieval

__all__ = [
    "EvalProtocol",
    "FullRanking",
    "LeakageError",
    "Retrieval",
    "SampledRanking",
    "audit_split",
    "evaluate",
    "metric_value",
]
