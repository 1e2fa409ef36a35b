"""One exception family per kind of failure; each message names the file or key and the fix."""


class SegcoreError(Exception):
    """Base class of every error segcore raises on purpose."""


class ConfigError(SegcoreError, ValueError):
    """An unknown config key, a value of the wrong type, or an inconsistent combination."""


class RasterError(SegcoreError):
    """A raster that cannot be read or used (corrupt, wrong band count, mismatched label)."""


class ShardError(SegcoreError):
    """A shard directory that is missing, incomplete, or lacks what the loader needs."""


class ArtifactError(SegcoreError):
    """An exported model or checkpoint that is missing, truncated, or of another format version."""


class TrainingError(SegcoreError):
    """Training cannot go on (for example a non-finite loss)."""


class OutputError(SegcoreError):
    """An output location segcore must not use: not its own, inside an input, or under a regular file."""


class BusyError(SegcoreError):
    """Another process holds the lock of the output (a dataset being built, an export being written)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGINT) turned into an exception so ``finally``/``except BaseException`` cleanups run.

    A ``KeyboardInterrupt`` subclass: ``except Exception`` handlers do not swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum
