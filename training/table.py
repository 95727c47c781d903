"""Plain-text tables for the command line: one column per key of the row dictionaries."""

from typing import Any


def format_table(rows: list[dict[str, Any]], decimals: int = 3) -> str:
    columns = list(rows[0])
    cells = [
        [f"{row[c]:.{decimals}f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        for row in rows
    ]
    widths = [max(len(column), *(len(r[i]) for r in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
