"""A gallery of deliberately broken queues, stores and pools, each a real lock or queue bug class.

Every case pairs a broken part with the correct one under the same load, so a case
proves two things at once: the criterion fails when the bug is there, and passes
when it is not. ``cases.CASES`` is the table; ``matrix.py`` runs it and prints the
detection matrix the README shows.
"""
