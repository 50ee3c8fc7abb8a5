"""Event-free survival by maximum CRS grade on the exported grade table (risk.md §5).

The primary analysis is a landmark at day 28 (risk.md §5.2): only patients
still event-free and followed beyond the landmark are kept, they are grouped by
the maximum CRS grade reached by the landmark (from the ``first_grade_ge*_day``
columns), and time is counted from the landmark. "1-year EFS" is EFS at day
``horizon_days`` after infusion *conditional on being event-free at the
landmark*: the Kaplan–Meier estimate on times since the landmark evaluated at
``horizon_days - landmark_days``. This equals the Kaplan–Meier estimate on
times since infusion with delayed entry (left truncation) at the landmark,
evaluated at ``horizon_days``. Without a landmark every patient counts from
infusion, grouped by the maximum grade; that comparison is exposed to
guarantee-time bias (the grade is known only once CRS has resolved).

Estimates come from lifelines: ``KaplanMeierFitter`` (pointwise 95 % CI with
the exponential Greenwood, log(-log S), transform), ``logrank_test``,
``multivariate_logrank_test``, ``CoxPHFitter`` (Efron ties) with
``proportional_hazard_test`` (scaled Schoenfeld residuals against rank of
time) and ``CoxTimeVaryingFitter``. The log-rank test for trend across the
ordered groups is computed here (lifelines has none): scores 0, 1, 2, 3 for
groups 0, 1–2, 3–4, 5, with the hypergeometric (log-rank) variance.

Every function returns JSON-ready data; an estimate that cannot be made (a group
of fewer than two patients, no events, a fit that does not converge) is
``None`` with a ``reason``, never an exception. Warnings of the fits are caught
and reported in the result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, CoxTimeVaryingFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import (
    logrank_test,
    multivariate_logrank_test,
    proportional_hazard_test,
)
from scipy.stats import chi2

GradeSource = Literal["computed", "adjudicated"]
EfsResult = dict[str, Any]
"""The JSON-ready result of :func:`analyze_efs` (keys in the module docstring
of :mod:`crsmon.analysis`)."""

NOTICE = (
    "Research data from crsmon, research software for monitoring and analysis, "
    "not a medical device"
)
GROUPS = ("0", "1-2", "3-4", "5")
"""CRS groups by maximum ASTCT grade; 5 (death from CRS) is its own group."""
GROUP_SCORES = {"0": 0, "1-2": 1, "3-4": 2, "5": 3}
"""Scores of the ordered groups in the log-rank test for trend."""
AT_RISK_DAYS = (0, 90, 180, 270, 365)
"""Days since the time origin (landmark or infusion) of the numbers at risk."""
MIN_GROUP = 2
"""Smallest group size for an estimate."""
ALPHA = 0.05
FIRST_DAY_COLUMNS = {
    1: "first_grade_ge1_day",
    2: "first_grade_ge2_day",
    3: "first_grade_ge3_day",
    4: "first_grade_ge4_day",
    5: "grade5_day",
}
EXTRAMEDULLARY = frozenset({"isolated_extramedullary", "isolated_emd_relapse"})
"""``disease_status`` values counted as isolated extramedullary disease (the
export's value, and the spelling of risk.md §5.5)."""
BLAST_OFFSET = 0.1
COVARIATES = ("ln_marrow_blasts", "extramedullary", "age_years")
COVARIATE_TEXT = {
    "severe_crs": "CRS grade 3–4 (vs 1–2)",
    "severe_crs_tv": "grade ≥3 reached (time-varying)",
    "hsct_tv": "after consolidative HSCT (time-varying)",
    "ln_marrow_blasts": f"ln(marrow blasts % + {BLAST_OFFSET})",
    "extramedullary": "isolated extramedullary disease",
    "age_years": "age (years)",
}
LONG_COLUMNS = (
    "patient_id",
    "start_day",
    "stop_day",
    "event",
    "hsct_tv",
    "severe_crs_tv",
    "age_years",
    "marrow_blast_pct_preinfusion",
    "extramedullary",
)
REFERENCE = {
    "trial": "B019 bicistronic CD19/CD22 CAR T, 343 children with r/r B-ALL "
    "(Wan et al., ASH 2024 abstract 681)",
    "efs_1y_grade_1_2": 0.809,
    "efs_1y_grade_3_4": 0.699,
    "p_logrank": 0.0191,
    "p_text": ".0191",
    "note": "a reference, not a target: the trial's denominator and time origin "
    "are not published (risk.md §0), and one synthetic trial of this size "
    "varies by several points (risk.md §3.6)",
}
CI_METHOD = (
    "lifelines KaplanMeierFitter pointwise 95 % CI, exponential Greenwood "
    "(log(-log S)) transform"
)


@dataclass(frozen=True, slots=True)
class Options:
    """How the cohort is formed (see :func:`analyze_efs`)."""

    landmark_days: float | None = 28.0
    censor_at_hsct: bool = False
    grade_source: GradeSource = "computed"
    horizon_days: float = 365.0

    @property
    def origin(self) -> float:
        """Day since infusion of the analysis time origin."""
        return self.landmark_days or 0.0

    @property
    def horizon_from_origin(self) -> float:
        """The horizon in days since the time origin."""
        return self.horizon_days - self.origin

    @property
    def time_column(self) -> str:
        return "efs_censored_at_hsct_time" if self.censor_at_hsct else "efs_time_days"

    @property
    def event_column(self) -> str:
        return "efs_censored_at_hsct_event" if self.censor_at_hsct else "efs_event"

    @classmethod
    def of(cls, result: EfsResult) -> Options:
        """The options an :func:`analyze_efs` result was computed with."""
        a = result["analysis"]
        return cls(
            landmark_days=a["landmark_days"],
            censor_at_hsct=a["censor_at_hsct"],
            grade_source=a["grade_source"],
            horizon_days=a["horizon_days"],
        )


def _num(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN or infinity)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def group_of(grade: float) -> str:
    """The CRS group of a maximum grade 0–5."""
    return GROUPS[(0, 1, 1, 2, 2, 3)[int(grade)]]


def required_columns(options: Options) -> list[str]:
    """The grade-table columns an analysis with these options reads."""
    columns = [
        "patient_id",
        "crs_max_grade_astct",
        options.time_column,
        options.event_column,
        "age_years",
        "disease_status",
        "marrow_blast_pct_preinfusion",
    ]
    if options.landmark_days is not None:
        columns += list(FIRST_DAY_COLUMNS.values())
    if options.grade_source == "adjudicated":
        columns.append("crs_max_grade_adjudicated")
    return columns


def _check(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s): {', '.join(missing)}")


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


def _extramedullary(status: pd.Series) -> pd.Series:
    """1 for isolated extramedullary disease, 0 for other statuses, NaN if empty."""
    text = status.astype("string").str.strip().fillna("")
    flag = text.isin(list(EXTRAMEDULLARY)).astype(float)
    return flag.where(text != "", np.nan)


def grade_by_day(patients: pd.DataFrame, day: float) -> pd.Series:
    """The maximum CRS grade reached by ``day`` since infusion (0 if none)."""
    grade = pd.Series(0.0, index=patients.index)
    for level, column in FIRST_DAY_COLUMNS.items():
        reached = _numeric(patients[column]) <= day
        grade = grade.where(~reached, float(level))
    return grade


def build_cohort(
    patients: pd.DataFrame, options: Options
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The analysed patients and how they were chosen.

    Columns: ``patient_id``, ``time`` (days since the time origin), ``event``,
    ``grade``, ``group``, ``adjudicated`` (bool) and the covariates
    ``ln_marrow_blasts``, ``extramedullary``, ``age_years``.
    """
    if options.landmark_days is not None and options.landmark_days <= 0:
        raise ValueError("the landmark must be after infusion (> 0 days)")
    if options.horizon_from_origin <= 0:
        raise ValueError("the horizon must come after the landmark")
    _check(patients, required_columns(options), "the grade table")
    frame = pd.DataFrame(
        {
            "patient_id": patients["patient_id"].astype(str),
            "time": _numeric(patients[options.time_column]),
            "event": _numeric(patients[options.event_column]),
            "computed_max": _numeric(patients["crs_max_grade_astct"]),
            "ln_marrow_blasts": np.log(
                _numeric(patients["marrow_blast_pct_preinfusion"]) + BLAST_OFFSET
            ),
            "extramedullary": _extramedullary(patients["disease_status"]),
            "age_years": _numeric(patients["age_years"]),
        },
        index=patients.index,
    )
    counts: dict[str, Any] = {"patients_in_table": len(frame)}
    if options.landmark_days is not None:
        computed = grade_by_day(patients, options.landmark_days)
        above = computed > frame["computed_max"]
        counts["grade_by_landmark_above_recorded_max"] = int(above.sum())
    else:
        computed = frame["computed_max"]
    if options.grade_source == "adjudicated":
        adjudicated = _numeric(patients["crs_max_grade_adjudicated"])
        frame["adjudicated"] = adjudicated.notna()
        frame["grade"] = adjudicated.where(frame["adjudicated"], computed)
        counts["adjudicated_in_table"] = int(frame["adjudicated"].sum())
    else:
        frame["adjudicated"] = False
        frame["grade"] = computed
    bad_time = frame["time"].isna() | frame["event"].isna() | (frame["time"] < 0)
    bad_grade = ~frame["grade"].isin([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    counts["excluded_missing_efs"] = int(bad_time.sum())
    counts["excluded_missing_grade"] = int((bad_grade & ~bad_time).sum())
    frame = frame[~bad_time & ~bad_grade].copy()
    frame["event"] = (frame["event"] > 0).astype(int)
    if options.landmark_days is not None:
        alive = frame["time"] > options.landmark_days
        counts["excluded_by_landmark"] = int((~alive).sum())
        counts["excluded_by_landmark_with_event"] = int(
            (~alive & (frame["event"] == 1)).sum()
        )
        frame = frame[alive].copy()
        frame["time"] = frame["time"] - options.landmark_days
    else:
        counts["excluded_by_landmark"] = 0
    frame["group"] = [group_of(g) for g in frame["grade"]]
    if options.landmark_days is not None:
        # Patients whose computed group at the landmark is not that of their
        # computed maximum grade (e.g. grade 3 first reached after the landmark).
        known = frame["computed_max"].isin([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        at_landmark = computed[frame.index]
        counts["regrouped_by_landmark"] = sum(
            group_of(a) != group_of(b)
            for a, b in zip(at_landmark[known], frame["computed_max"][known],
                            strict=True)
        )  # fmt: skip
    counts["analysed"] = len(frame)
    counts["events"] = int(frame["event"].sum())
    counts["adjudicated_used"] = int(frame["adjudicated"].sum())
    keep = ["patient_id", "time", "event", "grade", "group", "adjudicated", *COVARIATES]
    return frame[keep].reset_index(drop=True), counts


@contextmanager
def _caught(into: list[str]) -> Iterator[None]:
    """Record the warnings of a fit (lifelines' convergence warnings among them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            yield
    for w in caught:
        first = (str(w.message).strip().splitlines() or [""])[0]
        text = f"{w.category.__name__}: {first}"
        if text not in into:
            into.append(text)


FIT_ERRORS = (ConvergenceError, ValueError, ZeroDivisionError, np.linalg.LinAlgError)


def data_quality(patients: pd.DataFrame) -> dict[str, Any]:
    """What the export flagged, counted over the whole table (columns absent
    from a hand-made table count nothing)."""
    flags: dict[str, int] = {}
    if "outcome_flags" in patients.columns:
        for value in patients["outcome_flags"].dropna().astype(str):
            for flag in filter(None, value.split(";")):
                flags[flag] = flags.get(flag, 0) + 1
    found: dict[str, Any] = {"outcome_flags": flags}
    if "grade_matches_stored" in patients.columns:
        matches = patients["grade_matches_stored"].astype(str).str.lower()
        found["grade_not_matching_stored"] = int((matches == "false").sum())
    if "records_pending_grading" in patients.columns:
        pending = _numeric(patients["records_pending_grading"]).fillna(0)
        found["patients_with_records_pending_grading"] = int((pending > 0).sum())
    if "adjudication_stale" in patients.columns:
        stale = patients["adjudication_stale"].astype(str).str.lower()
        found["stale_adjudications"] = int((stale == "true").sum())
    return found


def kaplan_meier(frame: pd.DataFrame, horizon: float) -> dict[str, Any]:
    """n, events, EFS at ``horizon`` (time since the origin) with its 95 % CI,
    numbers at risk and the median follow-up by reverse Kaplan–Meier."""
    time, event = frame["time"], frame["event"]
    n = len(frame)
    found: dict[str, Any] = {
        "n": n,
        "events": int(event.sum()),
        "events_by_horizon": int(((time <= horizon) & (event == 1)).sum()),
        "efs_at_horizon": None,
        "efs_ci95": None,
        "at_risk": {str(d): int((time > d).sum()) for d in AT_RISK_DAYS},
        "median_follow_up_days": None,
        "reason": None,
        "warnings": [],
    }
    if n < MIN_GROUP:
        found["reason"] = f"fewer than {MIN_GROUP} patients"
        return found
    reverse = KaplanMeierFitter(alpha=ALPHA)
    with _caught(found["warnings"]):
        reverse.fit(time, 1 - event)
    found["median_follow_up_days"] = _num(reverse.median_survival_time_)
    last = float(time.max())
    if last < horizon and not bool((event[time == last] == 1).all()):
        # Past a censored last time the curve is unknown; past an event it is
        # the value it reached (0 once everyone has had an event).
        found["reason"] = "no patient followed up to the horizon"
        return found
    km = KaplanMeierFitter(alpha=ALPHA)
    with _caught(found["warnings"]):
        km.fit(time, event, label="efs")
    estimate = _num(km.survival_function_at_times([horizon]).iloc[0])
    found["efs_at_horizon"] = estimate
    if estimate is None:
        found["reason"] = "the estimate is not finite"
        return found
    if found["events_by_horizon"] == 0:
        found["reason"] = "no event by the horizon: EFS is 1 and its CI undefined"
        return found
    if estimate <= 0.0:
        found["reason"] = "EFS reached 0: its CI is undefined"
        return found
    band = km.confidence_interval_
    row = band[band.index <= horizon].iloc[-1]
    low, high = _num(row.iloc[0]), _num(row.iloc[1])
    found["efs_ci95"] = None if low is None or high is None else [low, high]
    return found


def _two_groups(frame: pd.DataFrame, first: Sequence[str], second: Sequence[str]
                ) -> dict[str, Any]:  # fmt: skip
    """Log-rank test of the patients in groups ``first`` against ``second``."""
    a = frame[frame["group"].isin(list(first))]
    b = frame[frame["group"].isin(list(second))]
    found: dict[str, Any] = {
        "groups": ["+".join(first), "+".join(second)],
        "n": [len(a), len(b)],
        "events": [int(a["event"].sum()), int(b["event"].sum())],
        "test_statistic": None,
        "df": 1,
        "p": None,
        "reason": None,
        "warnings": [],
    }
    if min(len(a), len(b)) < MIN_GROUP:
        found["reason"] = f"a side has fewer than {MIN_GROUP} patients"
        return found
    if sum(found["events"]) == 0:
        found["reason"] = "no events"
        return found
    with _caught(found["warnings"]):
        test = logrank_test(a["time"], b["time"], a["event"], b["event"])
    found["test_statistic"] = _num(test.test_statistic)
    found["p"] = _num(test.p_value)
    return found


def _present(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Patients of the groups with at least :data:`MIN_GROUP` patients."""
    sizes = frame["group"].value_counts()
    groups = [g for g in GROUPS if sizes.get(g, 0) >= MIN_GROUP]
    return frame[frame["group"].isin(groups)], groups


def _all_groups(frame: pd.DataFrame) -> dict[str, Any]:
    """Log-rank test across every group with at least two patients."""
    kept, groups = _present(frame)
    found: dict[str, Any] = {
        "groups": groups,
        "test_statistic": None,
        "df": None,
        "p": None,
        "reason": None,
        "warnings": [],
    }
    if len(groups) < 2:
        found["reason"] = f"fewer than two groups of {MIN_GROUP} or more patients"
        return found
    if int(kept["event"].sum()) == 0:
        found["reason"] = "no events"
        return found
    with _caught(found["warnings"]):
        test = multivariate_logrank_test(kept["time"], kept["group"], kept["event"])
    found["test_statistic"] = _num(test.test_statistic)
    found["df"] = int(test.degrees_of_freedom)
    found["p"] = _num(test.p_value)
    return found


def logrank_trend(
    time: Sequence[float] | pd.Series,
    event: Sequence[int] | pd.Series,
    score: Sequence[float] | pd.Series,
) -> tuple[float, float] | None:
    """Log-rank test for trend: chi-square (1 df) and p, or None if undefined.

    U = Σ_g w_g (O_g − E_g) over the groups (distinct scores w_g), with the
    hypergeometric covariance of O − E summed over the distinct event times;
    chi-square = U² / (wᵀVw). With two groups it is the log-rank test.
    """
    t = np.asarray(time, dtype=float)
    d = np.asarray(event, dtype=float)
    w = np.asarray(score, dtype=float)
    levels = np.unique(w)
    if len(levels) < 2 or d.sum() == 0:
        return None
    member = (w[:, None] == levels[None, :]).astype(float)
    u = 0.0
    variance = 0.0
    for at in np.unique(t[d > 0]):
        at_risk = member[t >= at].sum(axis=0)
        deaths = member[(t == at) & (d > 0)].sum(axis=0)
        n, dead = at_risk.sum(), deaths.sum()
        share = at_risk / n
        u += float(levels @ (deaths - dead * share))
        if n > 1:
            spread = dead * (n - dead) / (n - 1)
            cov = spread * (np.diag(share) - np.outer(share, share))
            variance += float(levels @ cov @ levels)
    if variance <= 0:
        return None
    statistic = u * u / variance
    return statistic, float(chi2.sf(statistic, 1))


def _trend(frame: pd.DataFrame) -> dict[str, Any]:
    kept, groups = _present(frame)
    found: dict[str, Any] = {
        "groups": groups,
        "scores": {g: GROUP_SCORES[g] for g in groups},
        "test_statistic": None,
        "df": 1,
        "p": None,
        "reason": None,
        "method": "log-rank test for trend (computed by crsmon; lifelines has "
        "none), group scores 0, 1, 2, 3 for groups 0, 1-2, 3-4, 5",
    }
    scores = [GROUP_SCORES[g] for g in kept["group"]]
    computed = logrank_trend(kept["time"], kept["event"], scores)
    if computed is None:
        found["reason"] = "fewer than two groups with events to compare"
        return found
    found["test_statistic"], found["p"] = _num(computed[0]), _num(computed[1])
    return found


def _terms(summary: pd.DataFrame) -> dict[str, Any]:
    return {
        str(name): {
            "label": COVARIATE_TEXT.get(str(name), str(name)),
            "coef": _num(row["coef"]),
            "se": _num(row["se(coef)"]),
            "hr": _num(row["exp(coef)"]),
            "ci95": [
                _num(row["exp(coef) lower 95%"]),
                _num(row["exp(coef) upper 95%"]),
            ],
            "p": _num(row["p"]),
        }
        for name, row in summary.iterrows()
    }


def _empty_model(exposure: str, covariates: Sequence[str]) -> dict[str, Any]:
    return {
        "exposure": exposure,
        "covariates_requested": list(covariates),
        "covariates_used": [],
        "n": 0,
        "events": 0,
        "n_dropped_missing": 0,
        "hr": None,
        "ci95": None,
        "p": None,
        "terms": {},
        "reason": None,
        "notes": [],
        "warnings": [],
    }


def _usable(data: pd.DataFrame, exposure: str, covariates: Sequence[str],
            found: dict[str, Any]) -> list[str] | None:  # fmt: skip
    """The covariates to fit, or None (and a reason) if the model cannot be fit."""
    if found["events"] == 0:
        found["reason"] = "no events"
        return None
    if data[exposure].nunique() < 2:
        found["reason"] = f"{exposure} takes one value only"
        return None
    used = [exposure]
    for name in covariates:
        if data[name].nunique() < 2:
            found["notes"].append(f"{name} left out: it takes one value only")
        else:
            used.append(name)
    found["covariates_used"] = used
    return used


def cox(frame: pd.DataFrame, covariates: Sequence[str] = ()) -> dict[str, Any]:
    """HR of CRS 3–4 vs 1–2 (patients of those groups), complete cases.

    With covariates, also the proportional-hazards test (rank of time).
    """
    exposure = "severe_crs"
    found = {**_empty_model(exposure, covariates), "ph_test": None}
    pair = frame[frame["group"].isin(["1-2", "3-4"])]
    data = pd.DataFrame(
        {
            "time": pair["time"],
            "event": pair["event"],
            exposure: (pair["group"] == "3-4").astype(float),
            **{name: pair[name] for name in covariates},
        }
    )
    complete = data.dropna()
    found["n"] = len(complete)
    found["events"] = int(complete["event"].sum())
    found["n_dropped_missing"] = len(data) - len(complete)
    for side, label in ((0.0, "1-2"), (1.0, "3-4")):
        rows = complete[complete[exposure] == side]
        if len(rows) < MIN_GROUP:
            found["reason"] = f"group {label} has fewer than {MIN_GROUP} patients"
            return found
        if int(rows["event"].sum()) == 0:
            found["reason"] = f"no events in group {label}: the HR is not estimable"
            return found
    used = _usable(complete, exposure, covariates, found)
    if used is None:
        return found
    fitted = complete[["time", "event", *used]]
    model = CoxPHFitter(alpha=ALPHA)
    try:
        with _caught(found["warnings"]):
            model.fit(fitted, duration_col="time", event_col="event")
    except FIT_ERRORS as exc:
        found["reason"] = f"the fit failed: {type(exc).__name__}: {exc}"
        return found
    _fill(found, _terms(model.summary), exposure)
    found["ph_test"] = _ph_test(model, fitted)
    return found


def _fill(found: dict[str, Any], terms: dict[str, Any], exposure: str) -> None:
    found["terms"] = terms
    main = terms[exposure]
    found["hr"], found["ci95"], found["p"] = main["hr"], main["ci95"], main["p"]
    if found["warnings"]:
        found["notes"].append(
            "the fit warned (see warnings): check the estimates before use"
        )


def _ph_test(model: Any, data: pd.DataFrame) -> dict[str, Any]:
    """Scaled Schoenfeld residuals against the rank of time, per covariate."""
    found: dict[str, Any] = {
        "method": "lifelines proportional_hazard_test, scaled Schoenfeld "
        "residuals, time_transform='rank'",
        "p": {},
        "notes": [],
        "reason": None,
        "warnings": [],
    }
    try:
        with _caught(found["warnings"]):
            test = proportional_hazard_test(model, data, time_transform="rank")
    except FIT_ERRORS as exc:
        found["reason"] = f"the test failed: {type(exc).__name__}: {exc}"
        return found
    for name, row in test.summary.iterrows():
        key = name[0] if isinstance(name, tuple) else name
        p = _num(row["p"])
        found["p"][str(key)] = p
        if p is not None and p < ALPHA:
            found["notes"].append(
                f"{COVARIATE_TEXT.get(str(key), key)}: p = {p:.3g} < 0.05, the "
                "hazard ratio seems to change over follow-up (proportional hazards "
                "doubtful); read the HR as an average over time"
            )
    return found


def _cox_models(frame: pd.DataFrame) -> dict[str, Any]:
    adjusted = cox(frame, COVARIATES)
    pair = frame[frame["group"].isin(["1-2", "3-4"])]
    same = frame[frame.index.isin(pair.dropna(subset=list(COVARIATES)).index)]
    return {
        "comparison": "CRS grade 3-4 vs 1-2 (patients of those two groups)",
        "crude": cox(frame),
        "crude_in_adjusted_sample": cox(same),
        "adjusted": adjusted,
        "adjusted_for": [COVARIATE_TEXT[c] for c in COVARIATES],
        "ties": "Efron (lifelines)",
    }


def _censored_in_remission(data: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """The start/stop rows cut at each patient's efs_censored_at_hsct time, the
    event kept only where that censoring keeps it (HSCT or new therapy in
    remission, as the KM, log-rank and Cox models of the same run)."""
    ends = dict(
        zip(
            patients["patient_id"].astype(str),
            zip(
                _numeric(patients["efs_censored_at_hsct_time"]),
                _numeric(patients["efs_censored_at_hsct_event"]),
                strict=True,
            ),
            strict=True,
        )
    )
    end = data["patient_id"].map(lambda p: ends.get(p, (np.nan, np.nan))[0])
    kept_event = data["patient_id"].map(lambda p: ends.get(p, (np.nan, np.nan))[1])
    data = data.assign(_end=end, _event=kept_event)
    data = data[data["start"] < data["_end"]].copy()
    data["stop"] = np.minimum(data["stop"], data["_end"])
    data["event"] = ((data["stop"] == data["_end"]) & (data["_event"] == 1)).astype(
        float
    )
    return data.drop(columns=["_end", "_event"])


def _long_frame(
    long: pd.DataFrame, censor_at_hsct: bool, patients: pd.DataFrame | None = None
) -> pd.DataFrame:
    _check(long, LONG_COLUMNS, "the efs_long table")
    data = pd.DataFrame(
        {
            "patient_id": long["patient_id"].astype(str),
            "start": _numeric(long["start_day"]),
            "stop": _numeric(long["stop_day"]),
            "event": _numeric(long["event"]),
            "severe_crs_tv": _numeric(long["severe_crs_tv"]),
            "hsct_tv": _numeric(long["hsct_tv"]),
            "ln_marrow_blasts": np.log(
                _numeric(long["marrow_blast_pct_preinfusion"]) + BLAST_OFFSET
            ),
            "extramedullary": _numeric(long["extramedullary"]),
            "age_years": _numeric(long["age_years"]),
        }
    )
    if (
        censor_at_hsct
        and patients is not None
        and set(HSCT_CENSORING) <= set(patients.columns)
    ):
        return _censored_in_remission(data, patients)
    if censor_at_hsct:
        # Without the grade table: rows are split at the HSCT day, so keeping
        # the rows before it censors there (new therapy is not seen).
        data = data[data["hsct_tv"] == 0]
    return data


HSCT_CENSORING = ("efs_censored_at_hsct_time", "efs_censored_at_hsct_event")


def time_varying(
    long: pd.DataFrame | None,
    censor_at_hsct: bool,
    patients: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Extended Cox model: grade ≥3 reached by time t, from infusion, all patients."""
    found: dict[str, Any] = {
        "status": "run",
        "method": "lifelines CoxTimeVaryingFitter on efs_long start/stop rows, "
        "from infusion, all patients; severe_crs_tv is 1 from the first day of "
        "computed grade ≥3 (reference: not, or not yet, grade ≥3, grade 0 "
        "included)",
        "models": {},
    }
    if long is None:
        found["status"] = "not run: no efs_long table given"
        return found
    data = _long_frame(long, censor_at_hsct, patients)
    if censor_at_hsct and patients is not None:
        found["method"] += (
            "; censored at HSCT or new therapy in remission (each patient's rows "
            "cut at efs_censored_at_hsct_time)"
        )
    elif censor_at_hsct:
        found["method"] += "; censored at HSCT (rows from the HSCT day dropped)"
    designs: dict[str, tuple[str, ...]] = {
        "crude": (),
        "adjusted": COVARIATES,
    }
    if not censor_at_hsct:
        designs["adjusted_with_hsct"] = (*COVARIATES, "hsct_tv")
    for name, covariates in designs.items():
        found["models"][name] = _tv_model(data, covariates)
    return found


def _tv_model(data: pd.DataFrame, covariates: Sequence[str]) -> dict[str, Any]:
    exposure = "severe_crs_tv"
    found = _empty_model(exposure, covariates)
    columns = ["patient_id", "start", "stop", "event", exposure, *covariates]
    rows = data[columns]
    incomplete = rows[rows.isna().any(axis=1)]["patient_id"].unique()
    complete = rows[~rows["patient_id"].isin(incomplete)]
    found["n"] = int(complete["patient_id"].nunique())
    found["rows"] = len(complete)
    found["events"] = int((complete["event"] > 0).sum())
    found["n_dropped_missing"] = len(incomplete)
    used = _usable(complete, exposure, covariates, found)
    if used is None:
        return found
    for level in (0, 1):
        if not (complete.loc[complete[exposure] == level, "event"] > 0).any():
            found["reason"] = (
                f"no events while {exposure} = {level}: the HR is not estimable"
            )
            return found
    model = CoxTimeVaryingFitter(alpha=ALPHA)
    fitted = complete[["patient_id", "start", "stop", "event", *used]].assign(
        event=lambda x: (x["event"] > 0).astype(int)
    )
    try:
        with _caught(found["warnings"]):
            model.fit(
                fitted,
                id_col="patient_id",
                event_col="event",
                start_col="start",
                stop_col="stop",
            )
    except FIT_ERRORS as exc:
        found["reason"] = f"the fit failed: {type(exc).__name__}: {exc}"
        return found
    _fill(found, _terms(model.summary), exposure)
    return found


def _describe(options: Options, counts: dict[str, Any]) -> dict[str, Any]:
    landmark = options.landmark_days
    horizon = options.horizon_days
    if landmark is not None:
        origin = f"the landmark, day {landmark:g} after infusion"
        definition = (
            f"EFS at day {horizon:g} after infusion given event-free beyond day "
            f"{landmark:g}: Kaplan-Meier on days since the landmark evaluated at "
            f"{horizon:g} - {landmark:g} = {horizon - landmark:g} days (the same as "
            f"Kaplan-Meier on days since infusion with entry at day {landmark:g}, "
            f"evaluated at day {horizon:g})"
        )
        bias = (
            f"landmark analysis (Anderson 1983; risk.md §5.2): only patients "
            f"event-free and followed beyond day {landmark:g}, grouped by the grade "
            f"reached by day {landmark:g}; protects against guarantee-time bias"
        )
        grouping = f"maximum ASTCT grade reached by day {landmark:g}"
    else:
        origin = "infusion (day 0)"
        definition = f"Kaplan-Meier EFS at day {horizon:g} after infusion"
        bias = (
            "no landmark: every patient from infusion, grouped by the maximum grade; "
            "exposed to guarantee-time bias (the maximum grade is known only once "
            "CRS has resolved, and early events classify the patient; risk.md §5.2)"
        )
        grouping = "maximum ASTCT grade"
    if options.grade_source == "adjudicated":
        grouping = (
            f"the adjudicated maximum grade where present "
            f"({counts['adjudicated_used']} analysed patients, "
            f"{counts['adjudicated_in_table']} in the table), else the {grouping} "
            "(computed)"
        )
        if landmark is not None:
            grouping += (
                "; adjudicated grades carry no timing, so an adjudicated patient is "
                f"grouped by the adjudicated overall maximum, not by day {landmark:g}"
            )
    else:
        grouping = f"{grouping} (computed by crsmon)"
    endpoint = (
        "EFS censored at consolidative HSCT (ELIANA-style; columns "
        "efs_censored_at_hsct_time, efs_censored_at_hsct_event)"
        if options.censor_at_hsct
        else "EFS (columns efs_time_days, efs_event)"
    )
    return {
        **asdict(options),
        "endpoint": endpoint,
        "efs_events": "no response (timed at day 28), relapse, death from any cause "
        "(grade 5 CRS included); as in the export's efs_event_type",
        "time_origin": origin,
        "horizon_from_origin_days": options.horizon_from_origin,
        "horizon_definition": definition,
        "guarantee_time_bias": bias,
        "grouping": grouping,
        "groups": list(GROUPS),
        "ci_method": CI_METHOD,
        "at_risk_days_from_origin": list(AT_RISK_DAYS),
        "at_risk_definition": "patients with analysis time > t days since the "
        "time origin (as lifelines' add_at_risk_counts under the plot)",
        "median_follow_up": "reverse Kaplan-Meier (censoring as the event), days "
        "since the time origin",
        "small_samples": f"groups of fewer than {MIN_GROUP} patients, or without "
        "events, get null estimates with a reason",
    }


def analyze_efs(
    patients: pd.DataFrame,
    long: pd.DataFrame | None,
    *,
    landmark_days: float | None = 28,
    censor_at_hsct: bool = False,
    grade_source: GradeSource = "computed",
    horizon_days: float = 365,
) -> EfsResult:
    """EFS by CRS group: Kaplan–Meier, log-rank tests, Cox models (JSON-ready).

    ``patients`` is the grade table (one row per patient), ``long`` the
    efs_long start/stop table (None: the time-varying model is not run).
    Raises ValueError only for a table without the columns it needs or
    impossible options; small or degenerate samples give null estimates.
    """
    if grade_source not in ("computed", "adjudicated"):
        raise ValueError(f"unknown grade source: {grade_source!r}")
    options = Options(
        landmark_days=None if landmark_days is None else float(landmark_days),
        censor_at_hsct=censor_at_hsct,
        grade_source=grade_source,
        horizon_days=float(horizon_days),
    )
    frame, counts = build_cohort(patients, options)
    horizon = options.horizon_from_origin
    groups = {g: kaplan_meier(frame[frame["group"] == g], horizon) for g in GROUPS}
    overall = kaplan_meier(frame, horizon)
    notes = []
    if counts.get("grade_by_landmark_above_recorded_max"):
        notes.append(
            f"{counts['grade_by_landmark_above_recorded_max']} patient(s) have a "
            "grade reached by the landmark above crs_max_grade_astct: check the "
            "export"
        )
    quality = data_quality(patients)
    counts["data_quality"] = quality
    if any(quality.values()):
        notes.append(
            "the export doubts some rows (outcome_flags, grades not yet matching "
            "the stored ones, records waiting for grading): see cohort.data_quality; "
            "such patients are analysed as exported"
        )
    if options.landmark_days is None:
        notes.append(
            "no landmark: the comparison is exposed to guarantee-time bias; the "
            "landmark analysis is the primary one"
        )
    return {
        "notice": NOTICE,
        "analysis": _describe(options, counts),
        "cohort": counts,
        "overall": overall,
        "groups": groups,
        "logrank": {
            "grade_1_2_vs_3_4": _two_groups(frame, ["1-2"], ["3-4"]),
            "grade_1_2_vs_3_5": _two_groups(frame, ["1-2"], ["3-4", "5"]),
            "all_groups": _all_groups(frame),
            "trend": _trend(frame),
        },
        "cox": _cox_models(frame),
        "time_varying": time_varying(long, options.censor_at_hsct, patients),
        "reference": dict(REFERENCE),
        "notes": notes,
    }
