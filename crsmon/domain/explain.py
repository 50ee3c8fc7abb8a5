"""The explanation a grading builds: reasons, flags and missing inputs, in order."""

from __future__ import annotations

from dataclasses import dataclass, field

from crsmon.domain.results import Flag, FlagKind, GradeResult, Reason
from crsmon.domain.rules import RuleSet


def num(value: float) -> str:
    """A measured value as written in reasons: ``7.0``, ``38.6``, ``0.0274``."""
    return f"{value:.1f}" if float(value).is_integer() else repr(float(value))


@dataclass
class Explanation:
    """Collects the reasons, flags and missing inputs of one grading."""

    reasons: list[Reason] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def reason(
        self,
        rule: str,
        finding: str,
        value: str,
        criterion: str,
        outcome: str,
        grade: int | None = None,
    ) -> None:
        self.reasons.append(Reason(rule, finding, value, criterion, outcome, grade))

    def flag(self, code: str, kind: FlagKind, message: str, fld: str | None) -> None:
        self.flags.append(Flag(code, kind, message, fld))

    def quality(self, code: str, message: str, fld: str | None = None) -> None:
        self.flag(code, FlagKind.DATA_QUALITY, message, fld)

    def monitoring(self, code: str, message: str) -> None:
        self.flag(code, FlagKind.MONITORING, message, None)

    def lacks(self, path: str) -> None:
        if path not in self.missing:
            self.missing.append(path)

    def result(self, grade: int, rules: RuleSet) -> GradeResult:
        return GradeResult(
            grade=grade,
            reasons=tuple(self.reasons),
            missing_inputs=tuple(self.missing),
            flags=tuple(self.flags),
            rule_set=rules.key,
        )
