"""Unit: the bedside feed records — accepted, converted, flagged or refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from crsmon.domain.codes import CODES
from crsmon.domain.records import Quantity
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.schemas import PatientIn, VitalsIn

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
BASE = {"source_system": "monitor-7", "source_record_id": "r-1", "patient": "P-0001"}


def parse(**fields: Any) -> Any:
    """Parse one record made of the base envelope plus ``fields``."""
    return parse_record(json.dumps({**BASE, **fields}), NOW)


def refused(**fields: Any) -> str:
    """The error of a record that must be refused."""
    result = parse(**fields)
    assert isinstance(result, Refused), result
    assert result.source_system == "monitor-7"
    return result.error


def vitals(**values: Any) -> Any:
    """A vitals record at 10:00 UTC with ``values``."""
    return parse(kind="vitals", observed_at="2026-03-01T10:00:00Z", **values)


def test_vitals_become_one_row_per_value_with_codes() -> None:
    """Each value of a vitals set is its own measurement row with LOINC and UCUM."""
    record = vitals(temperature_c=38.4, sbp_mmhg=92, dbp_mmhg=50)
    assert isinstance(record, VitalsIn)
    rows = {r.quantity: r for r in record.rows()}
    assert set(rows) == {"temperature_c", "sbp_mmhg", "dbp_mmhg"}
    assert rows["temperature_c"].loinc == "8310-5"
    assert rows["sbp_mmhg"].unit == "mm[Hg]"
    assert rows["sbp_mmhg"].key == "r-1#sbp_mmhg"
    assert rows["temperature_c"].occurred_at == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_fahrenheit_is_converted_and_the_original_kept() -> None:
    """100.4 [degF] is stored as exactly 38.0 Cel, with the reading kept."""
    (row,) = vitals(temperature_raw={"value": 100.4, "unit": "[degF]"}).rows()
    assert row.value == 38.0
    assert row.details == {"original_value": 100.4, "original_unit": "[degF]"}


@pytest.mark.parametrize(
    ("analyte", "value", "unit", "canonical"),
    [
        ("crp", 12.0, "mg/dL", 120.0),
        ("creatinine", 88.4, "umol/L", 1.0),
        ("fibrinogen", 2.5, "g/L", 250.0),
        ("platelets", 150000.0, "/uL", 150.0),
        ("ldh", 5.0, "ukat/L", 300.0),
    ],
)
def test_lab_units_convert_to_canonical(
    analyte: str, value: float, unit: str, canonical: float
) -> None:
    """A lab in an accepted UCUM unit is stored in the canonical unit (§4.3)."""
    record = parse(
        kind="lab",
        observed_at="2026-03-01T10:00:00Z",
        analyte=analyte,
        value=value,
        unit=unit,
    )
    (row,) = record.rows()
    assert row.value == pytest.approx(canonical)
    assert row.details["original_unit"] == unit


def test_extreme_values_are_kept_and_flagged() -> None:
    """A flag-column value (§4.4) is stored with a data-quality flag."""
    rows = {r.quantity: r for r in vitals(temperature_c=42.0, spo2_pct=65).rows()}
    assert rows["temperature_c"].quality_flags[0]["code"] == "temperature_c_extreme"
    assert rows["spo2_pct"].quality_flags[0]["code"] == "spo2_pct_extreme"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"observed_at": "2026-03-01T10:00:00"},
            "observed_at: Input should have timezone",
        ),
        ({"observed_at": 1772359200}, "observed_at: Input should be a valid datetime"),
        (
            {"observed_at": "2026-03-02T12:06:00Z"},
            "observed_at: is more than 5 minutes",
        ),
        ({"temperature_c": 46}, "temperature_c: must be >= 25"),
        ({"temperature_c": "38"}, "temperature_c: Input should be a valid number"),
        ({"sbp_mmhg": 60, "dbp_mmhg": 60}, "sbp_mmhg: must be greater than dbp_mmhg"),
        ({"heart_rate_per_min": 400}, "heart_rate_per_min: must be"),
        ({"colour": "red"}, "colour: unknown field"),
        ({}, "observed_at: a vitals record carries at least one value"),
        ({"supersedes": "r-0"}, "correction_reason: a correction gives both"),
    ],
)
def test_bad_vitals_are_refused_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    """A refused record says which field and why (and never echoes the value)."""
    record = {
        "kind": "vitals",
        "observed_at": "2026-03-01T10:00:00Z",
        "heart_rate_per_min": 90,
    }
    record.update(fields)
    if not fields:
        record.pop("heart_rate_per_min")
    error = refused(**record)
    assert error.startswith(message), error


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "teleport"}, "kind: must be one of"),
        (
            {
                "kind": "lab",
                "observed_at": "2026-03-01T10:00:00Z",
                "analyte": "crp",
                "value": 3,
                "unit": "g/L",
            },
            "unit: must be one of mg/L, mg/dL",
        ),
        (
            {
                "kind": "lab",
                "observed_at": "2026-03-01T10:00:00Z",
                "analyte": "crp",
                "value": 3,
                "unit": "mg/L",
                "loinc": "2532-0",
            },
            "loinc: must be one of",
        ),
        (
            {
                "kind": "lab",
                "observed_at": "2026-03-01T10:00:00Z",
                "analyte": "crp",
                "value": -1,
                "unit": "mg/L",
            },
            "value: must be >= 0",
        ),
        (
            {
                "kind": "oxygen",
                "observed_at": "2026-03-01T10:00:00Z",
                "device": "nasal_cannula",
                "fio2": 40,
            },
            "fio2: must be >= 0.21",
        ),
        (
            {
                "kind": "vasopressor_start",
                "started_at": "2026-03-01T10:00:00Z",
                "drug": "adrenaline",
                "dose": 0.1,
                "unit": "ug/kg/min",
            },
            "drug: Input should be",
        ),
        (
            {
                "kind": "patient",
                "care_unit": "PICU",
                "infusion_at": "2026-03-01T08:00:00Z",
            },
            "age_years: give birth_date or age_years",
        ),
    ],
)
def test_other_bad_records_are_refused(fields: dict[str, Any], message: str) -> None:
    """Unknown kinds, units, codes and vocabularies are refused, not guessed."""
    error = refused(**fields)
    assert error.startswith(message), error


def test_unreadable_json_is_refused_with_what_could_be_read() -> None:
    """Broken JSON is refused; NaN keeps its path and the sender's keys."""
    broken = parse_record("{nope", NOW)
    assert isinstance(broken, Refused)
    assert broken.error.startswith("$: not valid JSON")
    nan = parse_record(
        json.dumps(BASE)[:-1] + ', "kind": "vitals", "spo2_pct": NaN}', NOW
    )
    assert isinstance(nan, Refused)
    assert nan.error.startswith("spo2_pct: must be a finite number")
    assert nan.source_record_id == "r-1"


def test_every_kind_parses_to_rows() -> None:
    """Each clinical kind yields rows keyed by the sender's record id."""
    at = "2026-03-01T10:00:00Z"
    cases: list[dict[str, Any]] = [
        {"kind": "oxygen", "observed_at": at, "device": "blow_by"},
        {
            "kind": "vasopressor_start",
            "started_at": at,
            "drug": "vasopressin",
            "dose": 0.03,
            "unit": "U/min",
        },
        {"kind": "vasopressor_stop", "stopped_at": at, "start_record_id": "r-0"},
        {
            "kind": "fluid_bolus",
            "given_at": at,
            "for_hypotension": True,
            "volume_ml": 200,
        },
        {"kind": "treatment", "given_at": at, "drug": "tocilizumab"},
        {
            "kind": "attribution",
            "finding": "fever",
            "start_at": at,
            "by": "dr-3",
            "reason": "line infection",
        },
        {
            "kind": "outcome",
            "at": at,
            "event": "death",
            "death_attributable_to_crs": False,
        },
        {
            "kind": "retraction",
            "at": at,
            "target_record_id": "r-0",
            "reason": "wrong bed",
        },
    ]
    for fields in cases:
        rows = parse(**fields).rows()
        assert [r.kind for r in rows] == [fields["kind"]]
        assert rows[0].key == "r-1"


def test_enrolment_keeps_the_product_and_disease_burden() -> None:
    """A patient record carries age, unit, disease burden and the product."""
    record = parse(
        kind="patient",
        birth_date="2019-06-01",
        care_unit="PICU",
        disease_status="hematologic",
        marrow_blast_pct=45.0,
        product={"name": "CD19/CD22", "dose_cells_per_kg": 1e6, "viability_pct": 88.0},
        infusion_at="2026-03-01T08:00:00Z",
    )
    assert isinstance(record, PatientIn)
    row = record.patient_row()
    assert (row.pseudonym, row.viability_pct, row.marrow_blast_pct) == (
        "P-0001",
        88.0,
        45.0,
    )


def test_each_loinc_code_names_exactly_one_quantity() -> None:
    """No LOINC code is shared between quantities (grading.md §1.8 mislabels)."""
    seen: dict[str, Quantity] = {}
    for quantity, code in CODES.items():
        for loinc in code.all_codes:
            assert loinc not in seen, (loinc, seen.get(loinc), quantity)
            seen[loinc] = quantity
    assert set(CODES) == set(Quantity)
    for code in CODES.values():
        assert code.units[code.canonical_unit] == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kind": "vitals", "observed_at": "1989-12-31T23:59:59Z"},
            "observed_at: is before 1990-01-01",
        ),
        (
            {"kind": "vitals", "observed_at": "0001-01-01T00:00:00+05:00"},
            "observed_at: is before 1990-01-01",
        ),
        (
            {"kind": "vitals", "source_record_id": "k" * 104},
            "source_record_id: at most 103 characters for a vitals record",
        ),
        (
            {"kind": "transfer", "transferred_at": "2026-03-01T10:00:00Z"}
            | {"care_unit": "PICU\u0000"},
            "care_unit: must not contain control characters",
        ),
        (
            {"kind": "attribution", "finding": "fever"}
            | {"start_at": "2026-03-01T10:00:00Z", "by": "dr\n3", "reason": "x"},
            "by: must not contain control characters",
        ),
        (
            {"kind": "retraction", "at": "2026-03-01T10:00:00Z"}
            | {"target_record_id": "r-0", "reason": "bed\u00072"},
            "reason: must not contain control characters (other than tab",
        ),
        (
            {"kind": "patient", "care_unit": "PICU", "birth_date": "1890-01-01"}
            | {"infusion_at": "2026-03-01T08:00:00Z"},
            "birth_date: must give an age at infusion_at must be >= 0 and <= 120",
        ),
        (
            {"kind": "patient", "care_unit": "PICU", "birth_date": "2026-03-02"}
            | {"infusion_at": "2026-03-01T08:00:00Z"},
            "birth_date: must give an age",
        ),
        (
            {"kind": "patient", "care_unit": "PICU", "age_years": 9}
            | {"infusion_at": "2026-03-01T08:00:00Z"}
            | {
                "product": {
                    "name": "n" * 121,
                    "dose_cells_per_kg": 1e6,
                    "viability_pct": 90,
                }
            },
            "product.name: String should have at most 120 characters",
        ),
    ],
)
def test_hostile_times_texts_and_keys_are_refused(
    fields: dict[str, Any], message: str
) -> None:
    """Times before 1990, control characters, ids without room for ``#<field>``,
    impossible birth dates and over-long product names never reach the store."""
    record = {"temperature_c": 38.0, "observed_at": "2026-03-01T10:00:00Z"}
    if fields.get("kind") != "vitals":
        record = {}
    error = refused(**(record | fields))
    assert error.startswith(message), error


def test_free_text_keeps_line_breaks_and_a_refusal_keeps_only_a_wellformed_key() -> (
    None
):
    """A reason may run over lines; a refused record's sender and key are kept
    for the quarantine only when they are well formed."""
    record = parse(
        kind="retraction",
        at="2026-03-01T10:00:00Z",
        target_record_id="r-0",
        reason="wrong bed\r\n\tsee note",
    )
    assert record.reason == "wrong bed\r\n\tsee note"
    garbled = parse_record(
        json.dumps({**BASE, "source_system": "mon\u0000", "kind": "x"}), NOW
    )
    assert isinstance(garbled, Refused)
    assert (garbled.source_system, garbled.source_record_id) == (None, "r-1")
