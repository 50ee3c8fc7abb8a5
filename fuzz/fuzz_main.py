"""The entry point the three harnesses share: Atheris on crsmon's code only."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def run(argv: list[str], harness_file: str) -> None:
    """Fuzz a harness with libFuzzer's arguments (``-max_total_time``, dirs).

    Coverage comes from crsmon's own code: the plain copies already imported
    are dropped and the harness is imported again as a module, so that crsmon
    is imported anew under Atheris' instrumentation (instrumenting everything
    loaded, pydantic and SQLAlchemy included, takes a minute to start).
    """
    import atheris

    for name in [m for m in sys.modules if m.partition(".")[0] == "crsmon"]:
        del sys.modules[name]
    with atheris.instrument_imports(include=["crsmon"]):
        fresh = importlib.import_module(Path(harness_file).stem)
    atheris.Setup(argv, fresh.test_one_input)
    atheris.Fuzz()
