"""Repositories: every SQL statement the entrypoints need, by page or feature family.

The dashboard's read models live here (not in ``entrypoints/web``), so entrypoints build a
request, call a repository or a service and map the result; ``tests/unit/test_architecture``
keeps SQL out of ``entrypoints``. Readers go through :func:`leadflow.adapters.db.engine.read_only`
(on SQLite they never take the write lock).
"""
