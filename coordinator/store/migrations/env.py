"""Alembic environment: runs on the connection the store hands over (no alembic.ini, no URL here).

Revisions are written by hand (``script.py.mako`` is the template) and
tests/test_store_migrations.py checks that head matches coordinator/store/tables.py.
Offline SQL for a DBA: ``alembic -x url=postgresql://... upgrade head --sql`` with a
config whose ``script_location`` points here.
"""

from __future__ import annotations

from alembic import context

from coordinator.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    # Offline mode (``--sql``): print the DDL for a URL given as ``-x url=...``.
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite://")
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
