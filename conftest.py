"""Collection rules for the doctests that run over the packages (``--doctest-modules``)."""

# Alembic's env.py runs only inside Alembic's migration context; importing it anywhere else fails.
collect_ignore_glob = ["coordinator/store/migrations/*"]
