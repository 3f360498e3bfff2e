"""Typed exceptions. The CLI turns any MixoptError into one `error:` line and exit status 2."""


class MixoptError(Exception):
    """Base class of every error mixopt raises on purpose (bad input, bad data, failed study)."""


class ConfigError(MixoptError, ValueError):
    """A configuration file or value is invalid: the message names the field and the problem."""


class InputError(MixoptError, ValueError):
    """An argument of the Python API is invalid: the message names the argument."""


class DataError(MixoptError):
    """A corpus, manifest or shard is missing, truncated or corrupted."""


class StoreError(MixoptError):
    """The run store cannot be read or written (unwritable path, full disk, foreign file)."""


class StudyError(MixoptError):
    """A study cannot go on (for example every proxy of a round failed)."""
