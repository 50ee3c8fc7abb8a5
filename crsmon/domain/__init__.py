"""The pure core of crsmon: CRS grading, episodes and their explanations.

Standard library only, with no I/O, clock or environment: every function here is
a function of its arguments (enforced by ``tests/unit/test_domain_purity.py``).
Shells (CLI, API, workers) validate input at the edge, build these frozen values
and call :func:`grade_assessment` or :func:`grade_episode`.
"""

from crsmon.domain.astct2019 import ASTCT_2019
from crsmon.domain.catalog import DEFAULT_RULE_SET, RELEASED, resolve_rule_set
from crsmon.domain.episodes import grade_episode
from crsmon.domain.grading import grade_assessment
from crsmon.domain.results import (
    CrsCourse,
    EpisodeResult,
    Flag,
    FlagKind,
    GradeResult,
    ObservationGrade,
    Reason,
)
from crsmon.domain.rules import Conventions, RuleSet
from crsmon.domain.snapshot import (
    Assessment,
    Episode,
    IcansFindings,
    OxygenSupport,
    TemperatureReading,
    Treatment,
    VasopressorInfusion,
)

__all__ = [
    "ASTCT_2019",
    "DEFAULT_RULE_SET",
    "RELEASED",
    "Assessment",
    "Conventions",
    "CrsCourse",
    "Episode",
    "EpisodeResult",
    "Flag",
    "FlagKind",
    "GradeResult",
    "IcansFindings",
    "ObservationGrade",
    "OxygenSupport",
    "Reason",
    "RuleSet",
    "TemperatureReading",
    "Treatment",
    "VasopressorInfusion",
    "grade_assessment",
    "grade_episode",
    "resolve_rule_set",
]
