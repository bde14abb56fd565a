"""Errors a user can act on. The CLI prints them as one line and exits 2, never a traceback."""


class FpmonError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do."""


class FingerprintFileError(FpmonError):
    """A .fp file that is truncated, foreign, or of an unknown schema version."""


class ModelError(FpmonError):
    """A model folder or preset that cannot be loaded."""


class OverBudget(FpmonError):
    """A run stopped at its wall-clock deadline (a verifier's replay budget)."""
