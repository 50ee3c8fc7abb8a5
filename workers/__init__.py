"""Celery workers for crsmon (Redis broker).

Filled by the monitoring-service issue: tasks stay thin over
:mod:`crsmon.domain` (take ids, re-read the world, write idempotently).
"""
