"""Deterministic interleaving exploration: find narrow races on purpose and replay them exactly.

:func:`~pytest_quaero.core.explore.runner.explore` runs a scenario under N schedules that a
:class:`~pytest_quaero.core.explore.scheduler.Scheduler` controls statement by statement;
:func:`~pytest_quaero.core.explore.clock.now` is the schedule's clock for code under test.

Nothing is imported here: :mod:`~pytest_quaero.core.explore.spec` is read at every pytest
start-up (the settings table checks the two options with it), the rest only when a run explores.
"""
