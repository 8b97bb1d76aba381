"""The errors Sapphire raises for bad input. Each names the problem and what to do about it."""


class SapphireError(Exception):
    """Base class of every error Sapphire raises on purpose."""


class ConfigError(SapphireError):
    """The configuration is missing, malformed or inconsistent."""


class UnknownSymbolError(SapphireError):
    """A symbol is not listed by the market data source."""


class DataFileError(SapphireError):
    """A data file is missing, unreadable or has the wrong schema."""


class CandleSchemaError(SapphireError):
    """A candle frame does not have the columns and types of the candle contract."""


class ExchangeUnavailableError(SapphireError):
    """The exchange could not be reached after the configured retries."""


class ExchangeRejectedError(SapphireError):
    """The exchange answered with an error that retrying cannot fix."""
