"""The user-level lock-regression gallery: broken queues, stores and handlers written through the hooks.

Where ``tests/gallery`` plugs broken parts straight into the core's ``run_scenario``,
each variant here is a ``conftest.py`` a team could ship (``pytest_quaero_make_queue``,
``pytest_quaero_make_store``, ``pytest_quaero_handle_job``), run by ``pytest
--quaero-scenario=light|stress`` with the template's default settings, exactly as a
user's CI would run it. :mod:`lock_gallery.variants` holds the sources and the table;
``tests/test_lock_gallery.py`` and ``benchmarks/bench_detection.py`` run them.
"""
