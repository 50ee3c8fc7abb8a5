"""Field names shared by the synthetic-feed tests."""

TIME_FIELDS = (
    "observed_at",
    "given_at",
    "started_at",
    "stopped_at",
    "start_at",
    "end_at",
    "at",
    "transferred_at",
    "infusion_at",
)
"""Every time field a synthetic feed line can carry."""
