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
