"""Pydantic schemas at the edge: parse and validate input, then hand frozen domain values inward."""
