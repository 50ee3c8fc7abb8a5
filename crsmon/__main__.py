"""``python -m crsmon``."""

from crsmon.cli import main

main()
