"""The CRS risk models: data, training, evaluation and scoring (risk.md §4)."""
