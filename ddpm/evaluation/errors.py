"""The error of the evaluation package: a request it cannot carry out (sizes, seeds, paths, variances)."""

from __future__ import annotations


class EvaluationError(ValueError):
    """A problem with what evaluation was asked to do (sizes, paths); the message is one line."""


__all__ = ["EvaluationError"]
