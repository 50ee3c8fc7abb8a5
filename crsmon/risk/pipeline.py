"""``crsmon model train`` and ``crsmon model evaluate``: the whole path, file to file.

Training reads a feed (never a truth file), grades it as the service would,
fits the baseline model, the dynamic models (24 h and 48 h horizons) and two
comparators (m-EASIX, and fever >= 38.9 °C within 36 h, each a one-feature
logistic model), and writes them with manifests. Evaluation reads another
feed (a different seed), the models and, for the ceiling only, the truth file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from crsmon.domain.catalog import resolve_rule_set
from crsmon.risk.artifacts import LoadedModel, load_model, save_model
from crsmon.risk.dataset import PatientData, load_patients
from crsmon.risk.metrics import (
    Scores,
    bootstrap_auroc_ci,
    evaluate_scores,
    median,
    reliability_plot,
)
from crsmon.risk.training import (
    ALERT_SENSITIVITY,
    HORIZONS_H,
    LANDMARKS_H,
    SEED,
    baseline_design,
    dynamic_design,
    fit,
    fit_comparator,
    peaks_before_severe,
    prediction_times,
    sensitivity_threshold,
)

RULE_SET = "astct-2019"
"""The outcome's grading: ASTCT 2019 as crsmon applies it (grade >= 3)."""
ALERT_MODEL = "dynamic_48h"
"""The model whose threshold raises ``high_risk`` in the service."""
THRESHOLD_RULE = (
    f"the highest probability that {ALERT_SENSITIVITY:.0%} of the training patients "
    "who reached grade 3 reached in a rolling prediction before it "
    "(out-of-fold predictions, grouped 5-fold)"
)
NOTICE = "SYNTHETIC DATA; crsmon is research software, not a medical device"

COMPARATORS = {
    "comparator_m_easix": ("baseline", ("log_m_easix",)),
    "comparator_fever_36h": ("dynamic", ("fever_ge_38_9_within_36h",)),
}


def _patients(feed: Path, now: datetime) -> list[PatientData]:
    with feed.open(encoding="utf-8") as lines:
        return list(load_patients(lines, resolve_rule_set(RULE_SET), now=now))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def train(feed: Path, out: Path, *, now: datetime, created_at: datetime) -> list[Path]:
    """Fit and write every model from a feed; return the manifests written."""
    return train_on(_patients(feed, now), _sha256(feed), out, created_at=created_at)


def train_on(
    patients: Sequence[PatientData],
    feed_sha256: str,
    out: Path,
    *,
    created_at: datetime,
) -> list[Path]:
    """Fit and write every model from a feed's patients (see :func:`train`)."""
    common = {
        "outcome": "first crsmon ASTCT grade >= 3 (rule set astct-2019)",
        "rule_set": RULE_SET,
        "training_data_sha256": feed_sha256,
        "training_patients": len(patients),
        "seed": SEED,
        "created_at": created_at.isoformat(),
        "notice": NOTICE,
    }
    written = []
    base = baseline_design(patients)
    fitted = fit(base)
    written.append(
        save_model(
            fitted.estimator, out, "baseline",
            {**common, "kind": "baseline", "horizon_h": None,
             "features": list(base.names), "chosen": fitted.chosen,
             "held_out_auroc": fitted.held_out_auroc,
             "held_out_measure": "AUROC, 30 % of training patients held out",
             "rows": fitted.rows, "events": fitted.events},
        )
    )  # fmt: skip
    designs = {h: dynamic_design(patients, h) for h in HORIZONS_H}
    for horizon, design in designs.items():
        fitted = fit(design)
        peaks = peaks_before_severe(design, fitted.out_of_fold)
        written.append(
            save_model(
                fitted.estimator, out, f"dynamic_{horizon:g}h",
                {**common, "kind": "dynamic", "horizon_h": horizon,
                 "features": list(design.names), "chosen": fitted.chosen,
                 "held_out_auroc": fitted.held_out_auroc,
                 "held_out_measure": "mean AUROC at the 24 h and 48 h landmarks "
                 "(grade >= 3 later), 30 % of training patients held out",
                 "rows": fitted.rows,
                 "events": fitted.events,
                 "default_threshold": sensitivity_threshold(peaks),
                 "threshold_rule": THRESHOLD_RULE},
            )
        )  # fmt: skip
    for name, (kind, columns) in COMPARATORS.items():
        design = base if kind == "baseline" else designs[48.0]
        written.append(
            save_model(
                fit_comparator(design, columns), out, name,
                {**common, "kind": kind, "horizon_h": None if kind == "baseline"
                 else 48.0, "features": list(columns), "chosen": "logistic"},
            )
        )  # fmt: skip
    return written


def load_models(directory: Path) -> dict[str, LoadedModel]:
    """Every model of a directory, verified (see :mod:`crsmon.risk.artifacts`)."""
    return {p.stem: load_model(p) for p in sorted(directory.glob("*.json"))}


@dataclass(frozen=True, slots=True)
class LeadTime:
    """How early the dynamic model's alerts come, and how many there are."""

    threshold: float
    severe_patients: int
    alerted_before: int
    median_lead_h: float | None
    alerts: int
    patient_days: float

    @property
    def burden_per_patient_day(self) -> float:
        """Alerts (one per patient at most, as the service raises them) per
        patient-day of prediction."""
        return self.alerts / self.patient_days if self.patient_days else 0.0


def lead_time(
    model: LoadedModel, patients: Sequence[PatientData], threshold: float
) -> LeadTime:
    """Rolling scores every 4 h; an alert at the first p >= threshold (once per
    patient and episode, as the service raises ``high_risk``)."""
    leads: list[float] = []
    alerts = 0
    days = 0.0
    severe_count = 0
    for patient in patients:
        times = prediction_times(patient)
        if not times:
            continue
        p = model.probabilities([patient.dynamic_row(t) for t in times])
        first = next((t for i, t in enumerate(times) if p[i] >= threshold), None)
        alerts += first is not None
        days += (times[-1] - times[0] + 4.0) / 24
        severe = patient.first_severe_h
        if severe is not None:
            severe_count += 1
            if first is not None:  # prediction times all come before grade 3
                leads.append(severe - first)
    return LeadTime(threshold, severe_count, len(leads), median(leads), alerts, days)


def _landmark(
    patients: Sequence[PatientData], hours: float
) -> tuple[list[PatientData], NDArray[np.int64]]:
    """Patients below grade 3 at the landmark; whether they reached it later."""
    eligible = [
        p for p in patients if p.first_severe_h is None or p.first_severe_h > hours
    ]
    y = np.asarray([int(p.first_severe_h is not None) for p in eligible], np.int64)
    return eligible, y


def _within(
    patients: Sequence[PatientData], hours: float, horizon: float
) -> NDArray[np.int64]:
    """Whether grade >= 3 came within ``horizon`` hours after ``hours``."""
    return np.asarray(
        [
            int(p.first_severe_h is not None and p.first_severe_h <= hours + horizon)
            for p in patients
        ],
        np.int64,
    )


def _score(model: LoadedModel, patients: Sequence[PatientData], hours: float | None
           ) -> NDArray[np.float64]:  # fmt: skip
    if model.manifest["kind"] == "baseline":
        rows = [p.baseline_row() for p in patients]
    else:
        rows = [p.dynamic_row(hours or 0.0) for p in patients]
    return np.asarray(model.probabilities(rows), dtype=np.float64)


def evaluate(
    feed: Path,
    truth: Path,
    models_dir: Path,
    out: Path,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Every metric of the issue, as JSON-ready data; a reliability plot per set."""
    return evaluate_on(_patients(feed, now), truth, models_dir, out)


def evaluate_on(
    patients: Sequence[PatientData], truth: Path, models_dir: Path, out: Path
) -> dict[str, Any]:
    """:func:`evaluate` on a feed's patients."""
    models = load_models(models_dir)
    with truth.open(encoding="utf-8") as lines:
        true_risk = {
            row["pseudonym"]: float(row["p_true_base"])
            for row in map(json.loads, lines)
            if row.get("pseudonym")
        }
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"notice": NOTICE, "patients": len(patients)}
    y = np.asarray([int(p.first_severe_h is not None) for p in patients], np.int64)
    ceiling = np.asarray([true_risk[p.pseudonym] for p in patients], np.float64)
    base_scores = {
        "baseline": _score(models["baseline"], patients, None),
        "m_easix": _score(models["comparator_m_easix"], patients, None),
        "true_risk_ceiling": ceiling,
    }
    report["baseline"] = _block(y, base_scores)
    subgroups = {
        "baseline": _subgroups(
            patients, y, {k: base_scores[k] for k in ("baseline", "true_risk_ceiling")}
        )
    }
    reliability_plot(
        {k: (y, v) for k, v in base_scores.items()},
        out / "reliability_baseline.png",
        "Baseline model at infusion (synthetic held-out patients)",
    )
    for hours in LANDMARKS_H:
        eligible, ly = _landmark(patients, hours)
        scores = {
            "dynamic_48h": _score(models["dynamic_48h"], eligible, hours),
            "dynamic_24h": _score(models["dynamic_24h"], eligible, hours),
            "baseline": _score(models["baseline"], eligible, None),
            "m_easix": _score(models["comparator_m_easix"], eligible, None),
            "fever_38_9_within_36h": _score(
                models["comparator_fever_36h"], eligible, hours
            ),
            "true_risk_ceiling": np.asarray(
                [true_risk[p.pseudonym] for p in eligible], np.float64
            ),
        }
        targets = {
            "dynamic_48h": _within(eligible, hours, 48.0),
            "dynamic_24h": _within(eligible, hours, 24.0),
        }
        report[f"landmark_{hours:g}h"] = _block(ly, scores, targets)
        subgroups[f"landmark_{hours:g}h"] = _subgroups(
            eligible, ly, {k: scores[k] for k in (ALERT_MODEL, "true_risk_ceiling")}
        )
        reliability_plot(  # each against what it predicts: grade 3 within its horizon
            {k: (targets[k], scores[k]) for k in targets},
            out / f"reliability_landmark_{hours:g}h.png",
            f"Dynamic models at {hours:g} h: grade >= 3 within horizon",
        )
    alert = models[ALERT_MODEL]
    threshold = float(alert.manifest["default_threshold"])
    lead = lead_time(alert, patients, threshold)
    report["alerts"] = {
        "model": alert.key,
        "threshold": threshold,
        "severe_patients": lead.severe_patients,
        "alerted_before_grade_3": lead.alerted_before,
        "share_alerted_before": lead.alerted_before / lead.severe_patients
        if lead.severe_patients
        else None,
        "median_lead_time_h": lead.median_lead_h,
        "alerts_per_patient_day": lead.burden_per_patient_day,
    }
    report["subgroups"] = subgroups
    report["models"] = {name: m.key for name, m in models.items()}
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


SUBGROUPS: dict[str, Callable[[PatientData], bool]] = {
    "age <3 y": lambda p: p.baseline.age_years < 3,
    "age 3-17 y": lambda p: 3 <= p.baseline.age_years < 18,
    "age >=18 y": lambda p: p.baseline.age_years >= 18,
    "marrow disease": lambda p: p.baseline.isolated_extramedullary is False,
    "isolated extramedullary": lambda p: p.baseline.isolated_extramedullary is True,
}
"""TRIPOD+AI subgroups (risk.md §4.3). One product in the synthetic cohort, so
no split by product."""


def _subgroups(
    patients: Sequence[PatientData],
    y: NDArray[np.int64],
    scores: dict[str, NDArray[np.float64]],
) -> dict[str, Any]:
    """Per subgroup: size, events, and each score's AUROC (None: one class only)."""
    found: dict[str, Any] = {}
    for group, member in SUBGROUPS.items():
        index = np.asarray([member(p) for p in patients], dtype=bool)
        gy = y[index]
        entry: dict[str, Any] = {"n": int(index.sum()), "events": int(gy.sum())}
        for name, score in scores.items():
            if 0 < gy.sum() < len(gy):
                low, high = bootstrap_auroc_ci(gy, score[index])
                entry[name] = {
                    "auroc": float(roc_auc_score(gy, score[index])),
                    "auroc_ci95": (low, high),
                }
            else:
                entry[name] = None
        found[group] = entry
    return found


def _block(
    y: NDArray[np.int64],
    scores: dict[str, NDArray[np.float64]],
    targets: dict[str, NDArray[np.int64]] | None = None,
) -> dict[str, Any]:
    """Metrics per score: AUROC on ``y``, calibration on each score's own target
    (the dynamic models predict grade >= 3 within their horizon)."""
    found: dict[str, Scores] = {
        name: evaluate_scores(y, s, y_predicted=(targets or {}).get(name))
        for name, s in scores.items()
    }
    ceiling = found["true_risk_ceiling"].auroc
    return {
        name: {**s.as_dict(), "share_of_ceiling": s.auroc / ceiling}
        for name, s in found.items()
    }


HEADER = (
    f"  {'score':<24}{'AUROC (95% CI)':<24}{'of ceiling':>10}"
    f"{'Brier':>8}{'scaled':>8}{'slope':>7}{'interc.':>8}"
)


def table(report: dict[str, Any]) -> str:
    """A short text table of the AUROCs, calibration and alert figures."""
    lines = [
        f"crsmon model evaluation ({report['notice']}); {report['patients']} patients"
    ]
    for block in ("baseline", *(f"landmark_{h:g}h" for h in LANDMARKS_H)):
        lines.append(f"\n{block}")
        lines.append(HEADER)
        for name, s in report[block].items():
            low, high = s["auroc_ci95"]
            calibrated = "".join(
                f"{'-':>{w}}" if s[k] is None else f"{s[k]:>{w}.{d}f}"
                for k, w, d in (
                    ("brier", 8, 3),
                    ("scaled_brier", 8, 3),
                    ("calibration_slope", 7, 2),
                    ("calibration_intercept", 8, 2),
                )
            )
            lines.append(
                f"  {name:<24}{s['auroc']:.3f} ({low:.3f}-{high:.3f})     "
                f"{s['share_of_ceiling']:>10.1%}{calibrated}"
            )
    a = report["alerts"]
    lead = a["median_lead_time_h"]
    share = a["share_alerted_before"]
    lines.append(
        f"\nhigh_risk alerts ({a['model']}, threshold {a['threshold']:.3f}): "
        f"{a['alerted_before_grade_3']}/{a['severe_patients']} grade >= 3 patients "
        f"alerted before it ({'-' if share is None else f'{share:.0%}'}), median lead "
        f"{'-' if lead is None else f'{lead:.0f} h'}, "
        f"{a['alerts_per_patient_day']:.3f} alerts per patient-day"
    )
    lines.append("\nsubgroups (AUROC of the model; of the true risk)")
    for block, groups in report["subgroups"].items():
        model = "baseline" if block == "baseline" else ALERT_MODEL
        for group, entry in groups.items():
            mine, ceiling = entry[model], entry["true_risk_ceiling"]
            shown = (
                "-"
                if mine is None or ceiling is None
                else f"{mine['auroc']:.3f}; {ceiling['auroc']:.3f}"
            )
            lines.append(
                f"  {block:<14}{group:<26}n {entry['n']:>5}  events "
                f"{entry['events']:>4}  {shown}"
            )
    return "\n".join(lines)
