"""What callers of the fits need before any fit runs: the error they raise and the double-descent
detector's defaults. Importing it costs no scipy, so `status` and `run` do not pay for the fits."""

from __future__ import annotations

DEFAULT_TRAIN_TOL = 0.01  # train error at or below which a model interpolates
DEFAULT_MIN_RISE = 0.02  # a peak's smallest rise above both sides, relative to its height
DEFAULT_ALPHA = 0.05  # significance of the seed-level test


class FitError(ValueError):
    """The data cannot support the fit asked for (too few points, non-positive values...)."""
