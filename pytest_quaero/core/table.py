"""Plain-text tables for the terminal and the CLI: one helper for every aligned table."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["aligned"]


def aligned(rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    """Each row's cells padded to their column's widest, two spaces apart, trailing spaces cut."""
    cells = [[str(cell) for cell in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in cells]
