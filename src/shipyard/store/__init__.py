"""The store: one SQLAlchemy engine (SQLite by default, Postgres by URL), Alembic migrations, and
one query module per domain (``traces``, ``rollups``, ``keys``, ``audit``, ``feedback``, ``scores``,
``alerts``, ``drift``, ``runs``, ``datasets``, ``evals``, ``usage``, ``sessions``, ``otlp``,
``traffic``).

Public: ``db.Store``, ``tables`` (the schema), each query module's functions. ``traffic`` is what
the dashboard pages and ``/api`` both read (overview, trace lists, trace detail), so the two show
the same numbers. The store writes what it is given; it knows no HTTP, no providers, no guards.
"""
