"""Alembic migrations of the coordinator store, run by :func:`coordinator.store.migrate.upgrade`."""
