"""Persistence: SQLAlchemy 2.x tables, engines and Alembic migrations."""
