"""The EFS analysis as a short markdown report and a Kaplan–Meier plot."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from crsmon.analysis.efs import (
    AT_RISK_DAYS,
    COVARIATE_TEXT,
    GROUPS,
    MIN_GROUP,
    NOTICE,
    Options,
    build_cohort,
)

DASH = "–"


def group_text(group: str) -> str:
    """'1-2' as '1–2' (typographic dash, as the trial reports it)."""
    return group.replace("-", DASH)


def format_p(p: float | None) -> str:
    """A P value as computed, four decimals without the leading zero (.0191)."""
    if p is None:
        return "not computed"
    if p < 0.0001:
        return "< .0001"
    text = f"{p:.4f}"
    return text[1:] if text.startswith("0") else text


def p_text(p: float | None, name: str = "P") -> str:
    """'P = .0191', or 'P < .0001' for a very small P."""
    text = format_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "CI not defined"
    return f"{100 * ci[0]:.1f}{DASH}{100 * ci[1]:.1f}"


def _ratio_ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "CI not defined"
    return f"{ci[0]:.2f}{DASH}{ci[1]:.2f}"


def horizon_label(result: Mapping[str, Any]) -> str:
    """'1-year EFS' for a 365-day horizon, else 'EFS at day N'."""
    days = result["analysis"]["horizon_days"]
    return "1-year EFS" if days == 365 else f"EFS at day {days:g}"


def _efs(entry: Mapping[str, Any], full_ci: bool) -> str:
    if entry["efs_at_horizon"] is None:
        return f"not estimable ({entry['reason']})"
    prefix = "95 % CI " if full_ci else ""
    return f"{_pct(entry['efs_at_horizon'])} ({prefix}{_ci(entry['efs_ci95'])})"


def headline(result: Mapping[str, Any]) -> str:
    """The trial-shaped sentence: EFS of grade 1–2 vs 3–4 and the log-rank P."""
    groups = result["groups"]
    test = result["logrank"]["grade_1_2_vs_3_4"]
    p = (
        p_text(test["p"])
        if test["p"] is not None
        else f"not computed ({test['reason']})"
    )
    return (
        f"{horizon_label(result)}: grade 1{DASH}2 {_efs(groups['1-2'], True)} vs "
        f"grade 3{DASH}4 {_efs(groups['3-4'], False)}, log-rank {p}"
    )


def _model_line(name: str, model: Mapping[str, Any]) -> str:
    if model["hr"] is None:
        return f"- {name}: not estimable ({model['reason']}; n = {model['n']})"
    line = (
        f"- {name}: HR {model['hr']:.2f} (95 % CI {_ratio_ci(model['ci95'])}), "
        f"{p_text(model['p'])} (n = {model['n']}, {model['events']} events"
    )
    if model["n_dropped_missing"]:
        line += f"; {model['n_dropped_missing']} dropped for missing covariates"
    line += ")"
    left_out = [n for n in model["covariates_requested"]
                if n not in model["covariates_used"]]  # fmt: skip
    if left_out:
        line += f"; left out (one value only): {', '.join(left_out)}"
    if model["warnings"]:
        line += f"; fit warnings: {'; '.join(model['warnings'])}"
    return line


def _ph_line(model: Mapping[str, Any]) -> list[str]:
    ph = model.get("ph_test")
    if not ph:
        return []
    if ph["reason"]:
        return [f"  - proportional hazards: not tested ({ph['reason']})"]
    values = ", ".join(
        f"{COVARIATE_TEXT.get(k, k)} {p_text(v, 'p')}" for k, v in ph["p"].items()
    )
    lines = [f"  - proportional hazards (scaled Schoenfeld, rank of time): {values}"]
    lines += [f"  - {note}" for note in ph["notes"]]
    return lines


def _test_line(name: str, test: Mapping[str, Any]) -> str:
    if test["p"] is None:
        return f"- {name}: not computed ({test['reason']})"
    stat = f"χ² = {test['test_statistic']:.2f}, df {test['df']}, "
    return f"- {name}: {stat}{p_text(test['p'])}"


def markdown_table(result: Mapping[str, Any]) -> str:
    """The headline sentence, a table by CRS group, the Cox lines, the
    sensitivity analyses and the trial's figures as the reference."""
    a, cohort = result["analysis"], result["cohort"]
    landmark = a["landmark_days"]
    lines = [
        "# EFS by maximum CRS grade",
        "",
        f"{NOTICE}",
        "",
        f"**{headline(result)}**",
        "",
    ]
    if landmark is not None:
        lines.append(
            f"Landmark at day {landmark:g}: {cohort['analysed']} of "
            f"{cohort['patients_in_table']} patients event-free and followed beyond "
            f"day {landmark:g} ({cohort['excluded_by_landmark']} excluded, "
            f"{cohort['excluded_by_landmark_with_event']} of them with an event by "
            f"then); {cohort['regrouped_by_landmark']} patient(s) grouped below "
            "their final grade (grade reached later)."
        )
    else:
        lines.append(
            f"No landmark: {cohort['analysed']} of {cohort['patients_in_table']} "
            "patients from infusion. **Exposed to guarantee-time bias** "
            "(risk.md §5.2); the day-28 landmark analysis is the primary one."
        )
    quality = cohort.get("data_quality", {})
    doubts = [f"{flag} {n}" for flag, n in quality.get("outcome_flags", {}).items()]
    doubts += [
        f"{name.replace('_', ' ')} {n}"
        for name, n in quality.items()
        if name != "outcome_flags" and n
    ]
    if doubts:
        lines += [
            "",
            "Data the export doubts (analysed as exported): " + "; ".join(doubts) + ".",
        ]
    lines += [
        "",
        f"- Endpoint: {a['endpoint']}; events: {a['efs_events']}.",
        f"- Groups: {a['grouping']}.",
        f"- {horizon_label(result)}: {a['horizon_definition']}.",
        f"- CI: {a['ci_method']}.",
        "",
    ]
    origin = "the landmark" if landmark is not None else "infusion"
    at_risk = " | ".join(f"at risk d{d}" for d in AT_RISK_DAYS)
    lines += [
        f"| CRS group | n | events | {horizon_label(result)} (95 % CI) | {at_risk} "
        "| median follow-up (d) |",
        "|---|---:|---:|---|" + "---:|" * len(AT_RISK_DAYS) + "---:|",
    ]
    rows = [(f"grade {group_text(g)}", result["groups"][g]) for g in GROUPS]
    rows.append(("all analysed", result["overall"]))
    for name, entry in rows:
        if entry["n"] == 0:
            continue
        follow = entry["median_follow_up_days"]
        counts = " | ".join(str(entry["at_risk"][str(d)]) for d in AT_RISK_DAYS)
        lines.append(
            f"| {name} | {entry['n']} | {entry['events']} | {_efs(entry, False)} | "
            f"{counts} | {'not reached' if follow is None else f'{follow:.0f}'} |"
        )
    empty = [group_text(g) for g in GROUPS if result["groups"][g]["n"] == 0]
    if empty:
        lines += ["", f"No patient in group(s) {', '.join(empty)}."]
    lines += [
        "",
        f"Numbers at risk and follow-up (reverse Kaplan{DASH}Meier) in days since "
        f"{origin}.",
        "",
        f"## Cox models, grade 3{DASH}4 vs 1{DASH}2",
        "",
    ]
    cox = result["cox"]
    adjusted_for = ", ".join(cox["adjusted_for"])
    for name, key in (
        ("crude", "crude"),
        ("crude, in the adjusted model's patients", "crude_in_adjusted_sample"),
        (f"adjusted for {adjusted_for}", "adjusted"),
    ):
        lines.append(_model_line(name, cox[key]))
        lines += _ph_line(cox[key])
    logrank = result["logrank"]
    lines += [
        "",
        "## Sensitivity analyses",
        "",
        _test_line(
            f"log-rank grade 1{DASH}2 vs 3{DASH}5 (grade 5 pooled with 3{DASH}4)",
            logrank["grade_1_2_vs_3_5"],
        ),
        _test_line(
            "log-rank across all groups ("
            + ", ".join(group_text(g) for g in logrank["all_groups"]["groups"])
            + ")",
            logrank["all_groups"],
        ),
        _test_line("log-rank test for trend across ordered groups", logrank["trend"]),
    ]
    tv = result["time_varying"]
    if tv["status"] != "run":
        lines.append(f"- time-varying Cox (grade ≥3 reached by t): {tv['status']}")
    else:
        lines.append(f"- time-varying Cox: {tv['method']}")
        for name, model in tv["models"].items():
            lines.append("  " + _model_line(name.replace("_", " "), model))
    ref = result["reference"]
    lines += [
        "",
        "## Reference",
        "",
        f"{ref['trial']}: 1-year EFS grade 1{DASH}2 {_pct(ref['efs_1y_grade_1_2'])} "
        f"vs grade 3{DASH}4 {_pct(ref['efs_1y_grade_3_4'])}, P = {ref['p_text']}; "
        f"{ref['note']}.",
    ]
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def km_plot(
    patients: pd.DataFrame, result: Mapping[str, Any] | Options, path: Path
) -> Path:
    """Kaplan–Meier EFS by CRS group with 95 % CIs and numbers at risk (PNG).

    The cohort is rebuilt from ``patients`` with the options of ``result`` (an
    :func:`~crsmon.analysis.efs.analyze_efs` result, or the options themselves).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    options = result if isinstance(result, Options) else Options.of(dict(result))
    frame, _ = build_cohort(patients, options)
    horizon = options.horizon_from_origin
    figure, axes = plt.subplots(figsize=(8, 6.5))
    fitters = []
    labels = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in GROUPS:
            rows = frame[frame["group"] == group]
            if len(rows) < MIN_GROUP:
                continue
            fitter = KaplanMeierFitter().fit(
                rows["time"],
                rows["event"],
                label=f"grade {group_text(group)} (n = {len(rows)})",
            )
            fitter.plot_survival_function(ax=axes, ci_show=True)
            fitters.append(fitter)
            labels.append(f"grade {group_text(group)}")
        end = max(AT_RISK_DAYS[-1], horizon) + 10
        axes.set_xlim(0, end)
        axes.set_ylim(0, 1.02)
        axes.set_xticks(list(AT_RISK_DAYS))
        axes.axvline(horizon, linestyle=":", color="grey")
        axes.text(
            horizon, 0.03, f"day {options.horizon_days:g} after infusion ",
            fontsize=7, color="grey", ha="right",
        )  # fmt: skip
        if options.landmark_days is not None:
            landmark = options.landmark_days
            axes.set_xlabel(f"days since the landmark (day {landmark:g})")
            title = (
                f"EFS by maximum CRS grade reached by day {landmark:g} "
                f"(landmark at day {landmark:g})"
            )
        else:
            axes.set_xlabel("days since infusion")
            title = "EFS by maximum CRS grade, from infusion (no landmark: "
            title += "guarantee-time bias)"
        if options.censor_at_hsct:
            title += ", censored at HSCT"
        if options.grade_source == "adjudicated":
            title += ", adjudicated grades"
        axes.set_title(title, fontsize=9)
        axes.set_ylabel("event-free survival")
        if fitters:
            axes.legend(loc="lower left", fontsize=8)
            add_at_risk_counts(
                *fitters,
                labels=labels,
                ax=axes,
                rows_to_show=["At risk"],
                xticks=list(AT_RISK_DAYS),
            )
        else:
            axes.text(0.5, 0.5, "no group of two or more patients", ha="center",
                      transform=axes.transAxes)  # fmt: skip
        figure.subplots_adjust(bottom=0.3, left=0.16, right=0.96)
        figure.text(0.01, 0.01, f"crsmon: {NOTICE}", fontsize=6)
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
