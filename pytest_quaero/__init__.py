"""pytest-quaero: database-lock regression testing for SQLite-backed job queues.

A regular package (not a namespace one) on purpose: pytest marks an installed plugin's
modules for assertion rewriting by their dotted names, and without this file it would
take ``pytest_quaero/queue.py`` for a top-level module ``queue`` (the standard library's)
and warn "Module already imported so cannot be rewritten" in every session.
Nothing is imported here, so loading the plugin stays cheap.
"""
