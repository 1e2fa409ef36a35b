"""Content key of a shard build: what the inputs are, byte for byte, and how they are tiled."""

from __future__ import annotations

import hashlib
import json

from segcore.config import Config
from segcore.data.raster import discover_sources, sha256_file
from segcore.data.shard_plan import output_params


def shard_build_key(cfg: Config) -> str:
    """sha256 over every input raster's and label's content plus the output-shaping data keys.

    Two builds with the same key write the same bytes, so a finished build can be reused.
    """
    sources = []
    for src in discover_sources(cfg.data):
        label = sha256_file(src.label) if src.label else None
        sources.append([sha256_file(src.image), label, src.split])
    blob = {"sources": sources, "params": output_params(cfg), "dataset": cfg.data.dataset}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
