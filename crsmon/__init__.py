"""crsmon: grades and monitors cytokine release syndrome after CAR T-cell therapy.

Research software for monitoring and analysis, not a medical device.
"""

__version__ = "0.1.0"
