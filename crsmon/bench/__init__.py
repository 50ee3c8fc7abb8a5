"""``crsmon bench``: what crsmon sustains on its own machine, against references
measured in the same run (docs/performance.md)."""
