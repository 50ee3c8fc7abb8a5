"""crsmon: grades and monitors cytokine release syndrome after CAR T-cell therapy.

Research software for monitoring and analysis, not a medical device.
"""

from importlib.metadata import version

__version__ = version("crsmon")
