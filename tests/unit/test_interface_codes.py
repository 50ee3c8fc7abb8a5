"""Unit: the standard feeds' code tables (each code one concept, every unit a
conversion, docs/interfaces.md printed from them) and the pure readers."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation

from crsmon.domain.codes import CODES
from crsmon.domain.vocab import OxygenDevice, TreatmentDrug, VasoactiveDrug
from crsmon.interfaces import hl7v2
from crsmon.interfaces.codes import (
    ANALYTES,
    DEVICES,
    LOINC,
    MDC,
    MDC_NAMES,
    MDC_UNITS,
    RXNORM,
    UNITS,
    VITALS,
    device_for,
    markdown_tables,
)
from crsmon.interfaces.fhir import FhirError, parse_bundle, parse_resource
from crsmon.interfaces.fhir import read_medication as read_med
from crsmon.interfaces.fhir import read_observation as read_obs
from crsmon.interfaces.readings import Item, convert, record_key

DOC = (Path(__file__).parents[2] / "docs" / "interfaces.md").read_text("utf-8")
LOINC_URI = "http://loinc.org"


def test_docs_interfaces_prints_the_tables_of_the_code() -> None:
    shown = re.search(r"<!-- tables: begin -->\n(.*)\n<!-- tables: end -->", DOC, re.S)
    assert shown is not None
    assert shown.group(1) == markdown_tables()


def test_each_loinc_code_names_exactly_one_concept() -> None:
    """No code is listed under two quantities of the domain table, and the
    interface's own additions are not domain codes (one place per code)."""
    listed = Counter(code for c in CODES.values() for code in c.all_codes)
    assert [code for code, n in listed.items() if n > 1] == []
    for added in ("3151-8", "3150-0", "107117-4", "85354-9", "55284-4"):
        assert added not in listed
        assert added in LOINC
    assert set(listed) <= set(LOINC)


def test_mdc_names_and_codes_agree() -> None:
    assert set(MDC_NAMES.values()) == set(MDC)
    assert len(set(MDC_NAMES.values())) == len(MDC_NAMES)
    assert set(MDC.values()) <= VITALS


def test_every_measured_concept_has_units_and_every_unit_converts() -> None:
    for concept in {*VITALS, *ANALYTES, "flow_l_min", "fio2"}:
        assert UNITS[concept], concept
        canonical = {u.canonical for u in UNITS[concept].values()}
        assert len(canonical) == 1, concept
    assert set(MDC_UNITS.values()) <= {u for units in UNITS.values() for u in units}


@pytest.mark.parametrize(
    ("concept", "value", "unit", "expected"),
    [
        ("temperature_c", 102.2, "[degF]", 39.0),
        ("temperature_c", 100.4, "[degF]", 38.0),
        ("temperature_c", 38.0, "Cel", 38.0),
        ("sbp_mmhg", 12.0, "kPa", 90.00744),
        ("fio2", 40.0, "%", 0.4),
        ("fio2", 0.4, "1", 0.4),
        ("flow_l_min", 500.0, "mL/min", 0.5),
        ("crp", 5.0, "mg/dL", 50.0),
        ("creatinine", 88.4, "umol/L", 1.0),
    ],
)
def test_conversions_to_the_canonical_unit(
    concept: Any, value: float, unit: str, expected: float
) -> None:
    assert convert(concept, value, unit) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("concept", "unit"),
    [("temperature_c", "K"), ("spo2_pct", "1"), ("sbp_mmhg", "mmHg"), ("fio2", "")],
)
def test_an_unknown_unit_is_never_assumed(concept: Any, unit: str) -> None:
    assert convert(concept, 1.0, unit) is None


def test_device_text_is_normalized_and_unknown_text_is_none() -> None:
    assert device_for("High-flow nasal cannula") == (
        OxygenDevice.HIGH_FLOW_NASAL_CANNULA
    )
    assert device_for("  NON-REBREATHER MASK ") == OxygenDevice.NON_REBREATHER_MASK
    assert device_for("NIV") == OxygenDevice.BIPAP  # never CPAP: see the doc
    assert device_for("oxygen somehow") is None
    assert device_for("") is None
    assert set(DEVICES.values()) == set(OxygenDevice)  # every device can be named


def test_rxnorm_ingredients_and_the_rolled_up_product() -> None:
    assert RXNORM["11149"] == VasoactiveDrug.VASOPRESSIN
    assert RXNORM["242969"] == RXNORM["7512"] == VasoactiveDrug.NOREPINEPHRINE
    assert RXNORM["612865"] == TreatmentDrug.TOCILIZUMAB
    assert RXNORM["3616"] == VasoactiveDrug.DOBUTAMINE


def test_record_keys_are_key_safe_and_follow_the_content() -> None:
    hashed = record_key("urn:x|t-1", "ab" * 32)  # "|" is not key-safe
    assert hashed.startswith("h-")
    assert hashed.endswith("@" + "ab" * 6)
    assert "urn" not in hashed
    plain = record_key("Observation/t-1", "cd" * 32)
    assert plain == "Observation/t-1@" + "cd" * 6
    assert record_key(None, "ef" * 32) == "c-" + "ef" * 16
    long = record_key("x" * 200, "01" * 32)
    assert len(long) <= 103
    assert re.fullmatch(r"[A-Za-z0-9._:@/-]+", long)


def _obs(**fields: Any) -> Observation:
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o-1",
        "status": "final",
        "code": {"coding": [{"system": LOINC_URI, "code": "8310-5"}]},
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": "2026-11-02T10:00:00+01:00",
    }
    resource = parse_resource(base | fields)
    assert isinstance(resource, Observation)
    return resource


def test_an_stu3_blood_pressure_with_the_old_category_system_is_read() -> None:
    stu3 = {
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC_URI, "code": "55284-4"}]},
        "component": [
            {
                "code": {"coding": [{"system": LOINC_URI, "code": code}]},
                "valueQuantity": {
                    "value": v,
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            }
            for code, v in (("8480-6", 107), ("8462-4", 60))
        ],
    }
    item = read_obs(_obs(**stu3))
    assert item.action == "grade"
    assert item.at == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert [(v.concept, v.value) for v in item.values] == [
        ("sbp_mmhg", 107.0),
        ("dbp_mmhg", 60.0),
    ]


def test_an_mdc_coded_spo2_and_codings_that_disagree() -> None:
    mdc = {
        "code": {
            "coding": [
                {"system": LOINC_URI, "code": "59408-5"},
                {"system": "urn:iso:std:iso:11073:10101", "code": "150456"},
            ]
        },
        "valueQuantity": {"value": 95, "code": "%"},
    }
    assert [(v.concept, v.value) for v in read_obs(_obs(**mdc)).values] == [
        ("spo2_pct", 95.0)
    ]
    conflict = {
        "code": {
            "coding": [
                {"system": LOINC_URI, "code": "59408-5"},
                {"system": LOINC_URI, "code": "8867-4"},
            ]
        },
        "valueQuantity": {"value": 95, "code": "%"},
    }
    item = read_obs(_obs(**conflict))
    assert item.action == "refuse"
    assert [n.code for n in item.notes] == ["code-conflict"]


def test_a_value_neither_sent_nor_absent_and_a_unit_of_another_system() -> None:
    empty = read_obs(_obs())
    assert empty.action == "refuse"
    assert [n.element for n in empty.notes] == ["Observation.value[x]"]
    other = read_obs(
        _obs(valueQuantity={"value": 39, "system": "urn:local", "code": "C"})
    )
    assert [n.code for n in other.notes] == ["unit-system"]


def test_a_naive_time_and_another_resource_type_are_refused_by_the_models() -> None:
    with pytest.raises(FhirError) as naive:
        _obs(effectiveDateTime="2026-11-02T10:00:00")
    assert naive.value.element.startswith("Observation.effectiveDateTime")
    with pytest.raises(FhirError) as patient:
        parse_resource({"resourceType": "Patient", "id": "x"})
    assert patient.value.element == "resourceType"
    with pytest.raises(FhirError) as history:
        parse_bundle({"resourceType": "Bundle", "type": "history", "entry": []})
    assert history.value.element == "Bundle.type"


def test_a_contained_medication_and_an_ndc_code() -> None:
    ndc = {
        "resourceType": "MedicationAdministration",
        "id": "medadmin0301",
        "status": "in-progress",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med0303",
                "code": {
                    "coding": [
                        {"system": "http://hl7.org/fhir/sid/ndc", "code": "0409-6531"}
                    ]
                },
            }
        ],
        "medicationReference": {"reference": "#med0303"},
        "subject": {"reference": "Patient/example"},
        "effectivePeriod": {"start": "2026-11-02T10:00:00+01:00"},
    }
    resource = parse_resource(ndc)
    assert isinstance(resource, MedicationAdministration)
    item = read_med(resource)
    assert item.action == "hold"
    where = [n.element for n in item.notes]
    assert where == ["MedicationAdministration.contained.code"]
    rxnorm = ndc | {
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med0303",
                "code": {
                    "coding": [
                        {
                            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                            "code": "7512",
                        }
                    ]
                },
            }
        ]
    }
    running = parse_resource(rxnorm)
    assert isinstance(running, MedicationAdministration)
    given = read_med(running).administration
    assert given is not None
    assert (given.drug, given.stopped_at) == (VasoactiveDrug.NOREPINEPHRINE, None)


def test_hl7_times_need_their_offset_and_a_date_alone_is_held() -> None:
    item = Item("OBX", None, "F")
    hl7v2._time(item, "202611021000+0100", "OBX[1]-14")
    assert item.at == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    naive = Item("OBX", None, "F")
    hl7v2._time(naive, "20261102100000", "OBX[1]-14")
    assert (naive.action, [n.code for n in naive.notes]) == ("refuse", ["no-offset"])
    day = Item("OBX", None, "F")
    hl7v2._time(day, "20261102", "OBX[1]-14")
    assert (day.action, day.precision) == ("hold", "day")


def test_hl7_messages_split_whatever_the_line_endings() -> None:
    one = "MSH|^~\\&|A|B|||x||ORU^R01|1|P|2.5\rPID|||1\rOBX|1|NM|x"
    two = one.replace("|1|P", "|2|P")
    for sep in ("\r", "\n", "\r\n"):
        text = (one + "\r" + two).replace("\r", sep) + sep
        assert [m.count("\r") for m in hl7v2.split_messages(text)] == [3, 3]
