"""Evaluation: metrics, protocols (full ranking, sampled 1+N), the evaluator and leakage audit."""

from polyrec.eval.audit import LeakageError, audit_split
from polyrec.eval.evaluator import evaluate, metric_value

__all__ = ["LeakageError", "audit_split", "evaluate", "metric_value"]
