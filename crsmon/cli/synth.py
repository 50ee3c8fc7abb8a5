"""``crsmon synth``: write a synthetic CAR T cohort (feed, truth, manifest) to a folder.

The shell around :class:`crsmon.synth.study.Study`: it checks the arguments
(the data cut may not lie in the future of this machine's clock), streams the
feed to ``feed.ndjson``, then writes ``truth.jsonl``, ``manifest.json`` (with
each file's line count and sha256) and ``README.txt``. The generator itself is
pure, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from crsmon.cli.options import aware_time
from crsmon.synth import CohortDesign
from crsmon.synth.cohort import GradeMode
from crsmon.synth.study import (
    DEFAULT_DATA_CUT,
    LABEL,
    Study,
    StudySpec,
    dumps,
    manifest,
    readme_text,
)

FILES = ("feed.ndjson", "truth.jsonl", "manifest.json", "README.txt")


def _data_cut(_ctx: click.Context, _param: click.Parameter, value: str) -> datetime:
    at = aware_time(value)
    if at > datetime.now(UTC):
        raise click.BadParameter("lies in the future (feed times may not)")
    return at


def _is_synth_folder(out: Path) -> bool:
    """True if no file of ours is there, or a previous ``crsmon synth`` wrote them."""
    if not any((out / name).exists() for name in FILES):
        return True
    try:
        found = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(found, dict)
        and found.get("label") == LABEL
        and found.get("generator") == "crsmon.synth"
    )


class _Writer:
    """Writes lines to a file, counting them and hashing what was written."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8", newline="\n")
        self.digest = hashlib.sha256()
        self.lines = 0

    def write(self, text: str) -> None:
        data = f"{text}\n"
        self.file.write(data)
        self.digest.update(data.encode("utf-8"))
        self.lines += 1

    def close(self) -> dict[str, Any]:
        self.file.close()
        return {"lines": self.lines, "sha256": self.digest.hexdigest()}


@click.command()
@click.option(
    "--patients",
    type=click.IntRange(1, 20_000),
    default=343,
    show_default=True,
    help="Cohort size (343: the B019 trial). 20,000 patients take about 3 min, "
    "0.5 GB of memory and 2.2 GB of disk.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write feed.ndjson, truth.jsonl, manifest.json and README.txt "
    "to. Files of an earlier `crsmon synth` there are replaced; the command "
    "stops if other files have those names.",
)
@click.option(
    "--days",
    type=click.IntRange(2, 60),
    default=28,
    show_default=True,
    help="Days of bedside records after each infusion.",
)
@click.option(
    "--data-cut",
    "data_cut",
    default=DEFAULT_DATA_CUT.isoformat(),
    show_default=True,
    callback=_data_cut,
    metavar="TIME",
    help="The data cut (ISO 8601 with a UTC offset, not in the future): accrual "
    "runs for 24 months from 30 months before it; outcomes are charted up to it.",
)
@click.option(
    "--grade-mode",
    type=click.Choice(["latent", "quota"]),
    default="latent",
    show_default=True,
    help="latent: grades from the severity score S (risk.md §3.3); quota: exact "
    "counts per grade.",
)
@click.option(
    "--toci-modifies-course",
    is_flag=True,
    help="Scenario (risk.md §3.5): a first tocilizumab dose before grade 3 stops "
    "the escalation with p = 0.35.",
)
@click.option(
    "--planted-faults",
    is_flag=True,
    help="Add the demo's deliberately faulty feed lines (each must be refused).",
)
def synth(
    patients: int,
    seed: int,
    out: Path,
    days: int,
    data_cut: datetime,
    grade_mode: str,
    toci_modifies_course: bool,
    planted_faults: bool,
) -> None:
    """Write a seeded SYNTHETIC cohort: a feed, its hidden truth and a manifest.

    The cohort follows the risk spec's generator design (risk.md §3): baseline
    covariates, a latent severity, CRS courses with 4-hourly vitals, labs and
    treatments over DAYS days, and response, relapse, HSCT and death up to the
    data cut. `crsmon ingest OUT/feed.ndjson` takes the feed in; truth.jsonl is
    for evaluation code only. Every patient and value is synthetic.
    """
    mode: GradeMode = "quota" if grade_mode == "quota" else "latent"
    spec = StudySpec(
        patients=patients,
        seed=seed,
        days=days,
        data_cut=data_cut,
        design=CohortDesign(grade_mode=mode, toci_modifies_course=toci_modifies_course),
        planted=planted_faults,
    )
    out.mkdir(parents=True, exist_ok=True)
    if not _is_synth_folder(out):
        raise click.ClickException(
            f"{out} holds files not written by crsmon synth; choose another --out"
        )
    started = time.perf_counter()
    study = Study(spec)
    feed = _Writer(out / "feed.ndjson")
    try:
        for line in study.lines():
            feed.write(line.text)
    finally:
        files = {"feed.ndjson": feed.close()}
    truth = _Writer(out / "truth.jsonl")
    records = study.truth()
    try:
        for record in records:
            truth.write(dumps(record))
    finally:
        files["truth.jsonl"] = truth.close()
    text = json.dumps(manifest(spec, files), indent=2, ensure_ascii=False)
    (out / "manifest.json").write_text(f"{text}\n", encoding="utf-8", newline="\n")
    (out / "README.txt").write_text(readme_text(spec), encoding="utf-8", newline="\n")
    _summary(out, spec, records[1:], files, time.perf_counter() - started)


def _summary(
    out: Path,
    spec: StudySpec,
    records: list[dict[str, Any]],
    files: dict[str, dict[str, Any]],
    seconds: float,
) -> None:
    grades = Counter(int(r["observed_max_grade"]) for r in records)
    toci = sum(1 for r in records if r["crs"]["tocilizumab_doses"])
    shares = ", ".join(f"{g}: {100 * grades[g] / len(records):.1f} %" for g in range(6))
    click.echo(
        f"crsmon synth: {spec.patients} {LABEL} patients, seed {spec.seed}, "
        f"{spec.days} days, data cut {spec.cut.isoformat()}"
    )
    click.echo(f"maximum grade {shares}")
    click.echo(f"tocilizumab {100 * toci / len(records):.1f} %")
    for name, info in files.items():
        click.echo(f"{out / name}: {info['lines']} lines, sha256 {info['sha256']}")
    click.echo(f"elapsed {seconds:.1f} s")
