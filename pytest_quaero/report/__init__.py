"""Reports: terminal, progress, Markdown, pytest-html, report files and CI surfaces. Reads RunResult, never SQLite."""
