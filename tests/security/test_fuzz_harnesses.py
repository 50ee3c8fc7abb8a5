"""T10 (reliability.md §4.5): the Atheris harnesses of ``fuzz/``, run two ways.

- Each harness fuzzes as a subprocess (libFuzzer under Atheris) for
  ``CRSMON_FUZZ_SECONDS`` seconds (default 10; the nightly run sets 1800, see
  fuzz/README.md), starting from its kept corpus, with ``-timeout=1`` (an
  input taking a second or more is a finding). It must end with exit 0: no
  exception other than the declared validation errors, no finding, no
  timeout. The three run at once; their executions per second are printed.
- Every file of the kept regression corpus ``tests/data/fuzz-corpus/<harness>/``
  (seeds, and every crash ever found and fixed) is replayed in-process through
  the harness's ``test_one_input``, each in under a second.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
CORPUS = ROOT / "tests" / "data" / "fuzz-corpus"
HARNESSES = ("intake", "grading", "jsonl")
DICTIONARY = {"intake": FUZZ / "feed.dict", "jsonl": FUZZ / "feed.dict"}
SECONDS = int(os.environ.get("CRSMON_FUZZ_SECONDS", "10"))
INPUT_LIMIT_S = 1.0
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def harness(name: str) -> Callable[[bytes], None]:
    """``fuzz/<name>_fuzz.py``'s ``test_one_input``, imported from its file."""
    path = FUZZ / f"{name}_fuzz.py"
    spec = importlib.util.spec_from_file_location(f"{name}_fuzz", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    one_input: Callable[[bytes], None] = module.test_one_input
    return one_input


def fuzz_command(name: str, work: Path) -> list[str]:
    """libFuzzer's command line: new inputs to ``work``, the kept corpus read."""
    (work / "new").mkdir(parents=True)
    command = [
        sys.executable,
        str(FUZZ / f"{name}_fuzz.py"),
        str(work / "new"),
        str(CORPUS / name),
        f"-max_total_time={SECONDS}",
        f"-timeout={int(INPUT_LIMIT_S)}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={work}/",
    ]
    if name in DICTIONARY:
        command.append(f"-dict={DICTIONARY[name]}")
    return command


def test_every_harness_fuzzes_clean_within_the_budget(
    tmp_path: Path, subtests: pytest.Subtests
) -> None:
    """The three harnesses at once, each for CRSMON_FUZZ_SECONDS: exit 0."""
    runs = {}
    for name in HARNESSES:
        log = (tmp_path / f"{name}.log").open("w")
        runs[name] = (
            subprocess.Popen(
                fuzz_command(name, tmp_path / name),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    for name, (process, log) in runs.items():
        with subtests.test(msg=name):
            try:
                code = process.wait(timeout=SECONDS + 120)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()
            output = (tmp_path / f"{name}.log").read_text(errors="replace")
            done = _DONE.search(output)
            if done:
                runs_done, seconds = int(done[1]), max(int(done[2]), 1)
                print(  # noqa: T201 -- the measured rate is a figure of the run
                    f"\n{name}_fuzz: {runs_done} runs in {seconds} s, "
                    f"{runs_done // seconds} exec/s"
                )
            artifacts = sorted(p.name for p in (tmp_path / name).glob("*-*"))
            assert code == 0, f"{name}: exit {code}, {artifacts}\n{output[-3000:]}"
            assert done is not None, output[-3000:]


@pytest.mark.parametrize("name", HARNESSES)
def test_the_kept_corpus_replays_clean(name: str) -> None:
    """Every kept input (seed or fixed crash) passes, each in under a second."""
    one_input = harness(name)
    files = sorted(p for p in (CORPUS / name).iterdir() if p.is_file())
    assert len(files) >= 5
    slowest = 0.0
    for path in files:
        started = time.perf_counter()
        one_input(path.read_bytes())
        elapsed = time.perf_counter() - started
        assert elapsed < INPUT_LIMIT_S, path.name
        slowest = max(slowest, elapsed)
    print(  # noqa: T201 -- the slowest input is a figure of the run
        f"\n{name}: {len(files)} kept inputs, slowest {slowest * 1000:.0f} ms"
    )
