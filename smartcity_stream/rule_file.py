"""Rule thresholds from a JSON file, validated: how the stream worker takes overrides.

Apart from `rules` because validating needs pydantic, and `rules` is also imported by Spark's
executors (the batch layer re-runs the same rules there), whose Python has no pydantic.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter

from smartcity_stream.rules import RuleConfig

_RULES = TypeAdapter(RuleConfig)


def load_rules(path: Path | None) -> RuleConfig:
    """The thresholds in `path` (the defaults for every key it leaves out), or the defaults;
    an unknown key, a value of the wrong type or out of range raises a `ValueError`."""
    return _RULES.validate_json(path.read_bytes()) if path else RuleConfig()
