"""The errors of the backtester: each names the offending symbol and bar."""

from sapphire_domain.errors import SapphireError


class BacktestInputError(SapphireError):
    """Weights or prices handed to the backtester break its contract."""


class NonFiniteWeightsError(BacktestInputError):
    """A target weight is NaN or infinite."""


class LeverageExceededError(BacktestInputError):
    """The gross weight (sum of |weight|) of a bar is above the configured leverage limit."""


class MissingPriceError(BacktestInputError):
    """A symbol has to be traded or valued at a bar whose price is missing."""


class MisalignedIndexError(BacktestInputError):
    """Weights and prices are not on the same bars and symbols."""


class LookaheadDetectedError(BacktestInputError):
    """A strategy's weight at bar t changes once the bars after t are removed."""
