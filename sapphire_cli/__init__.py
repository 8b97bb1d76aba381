"""The ``sapphire`` command."""
