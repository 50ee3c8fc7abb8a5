"""Standard feeds: FHIR R4 and HL7 v2 in, CDS Hooks cards out (docs/interfaces.md)."""
