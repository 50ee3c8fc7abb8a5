"""Outcome analyses on the exported grade tables (risk.md §5; research use only).

:func:`analyze_efs` returns a JSON-ready dict with the keys

- ``notice``: the research-software disclaimer;
- ``analysis``: the options (``landmark_days``, ``censor_at_hsct``,
  ``grade_source``, ``horizon_days``) and what they mean (time origin, horizon
  definition, grouping, CI method, guarantee-time bias);
- ``cohort``: patients in the table, analysed, excluded and why, adjudicated
  grades used, patients regrouped by the landmark;
- ``overall`` and ``groups`` (``"0"``, ``"1-2"``, ``"3-4"``, ``"5"``): Kaplan–Meier
  n, events, EFS at the horizon with its 95 % CI, numbers at risk, median
  follow-up, and a ``reason`` when an estimate is null;
- ``logrank``: ``grade_1_2_vs_3_4``, ``grade_1_2_vs_3_5``, ``all_groups``, ``trend``;
- ``cox``: ``crude``, ``crude_in_adjusted_sample`` and ``adjusted`` HR of grade
  3–4 vs 1–2, each with its proportional-hazards test;
- ``time_varying``: the extended Cox models on the efs_long table (or why not run);
- ``reference``: the B019 figures (a reference, not a target);
- ``notes``.

The modules import pandas and lifelines: import them inside CLI commands.
"""

from crsmon.analysis.efs import EfsResult, analyze_efs
from crsmon.analysis.report import km_plot, markdown_table

__all__ = ["EfsResult", "analyze_efs", "km_plot", "markdown_table"]
