"""The pytest-free pipeline of a load run: settings, database, queue and store, pool, run, criteria, gate.

Nothing under this package imports pytest; the plugin's wiring (the top-level modules,
:mod:`pytest_quaero.report`, :mod:`pytest_quaero.xdist`) builds on it, never the other
way round. Only :mod:`.settings` (with the :mod:`.fields` table it reads) and
:mod:`.scenarios` are loaded at every pytest start-up; the rest loads when it is used.
"""
