"""Edge schemas (Pydantic): validate input, then hand frozen domain values inward."""
