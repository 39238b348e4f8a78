"""Errors a user can cause. The CLI prints their message on one line and exits with status 2."""

from __future__ import annotations


class PolyrecError(Exception):
    """Base class of every error caused by user input (data, config, files, requests)."""

    exit_code = 2


class DataError(PolyrecError):
    """A dataset, file or column is missing, empty or malformed."""


class ConfigError(PolyrecError):
    """A configuration key or value is unknown or has the wrong type."""


class CheckpointError(PolyrecError):
    """A checkpoint or run directory is missing, corrupt, truncated or mismatched."""


class NotFittedError(PolyrecError, RuntimeError):
    """A model was used before it was set up for data (``Model.setup``) or restored."""
