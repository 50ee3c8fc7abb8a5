"""Celery workers for crsmon (Redis broker; the database is the queue of record).

- :mod:`workers.jobs`: what a grading message stands for, as plain functions
  (claim an attempt, grade a patient once, record failures, find stale work).
- :mod:`workers.celery_app`: ``make_celery(settings)`` and the reliable Celery
  configuration; ``celery -A workers.celery_app worker`` finds ``app`` here.
- :mod:`workers.tasks`: the thin tasks (``crsmon.grade_patient``,
  ``crsmon.sweep``) and the ``CeleryDispatcher``.
- :mod:`workers.cli`: the ``crsmon worker`` and ``crsmon beat`` commands.

See ``workers/README.md`` for how to run them and what they guarantee.
"""
