"""`python -m bench` (what `make bench` runs): every `bench_*.py` module here, in order."""

from __future__ import annotations

import importlib
from pathlib import Path

for module in sorted(Path(__file__).parent.glob("bench_*.py")):
    importlib.import_module(f"bench.{module.stem}").main([])
