"""The Markdown report's sections, one renderer per template section.

Each renderer is ``(ReportFigures) -> list[str]``: it reads the figures computed once in
:mod:`pytest_quaero.report.figures` and returns its lines, headings and closing rule
included. :mod:`pytest_quaero.report.markdown` lists them in the template's order.
"""
