"""The report of a run: its rows (a measurement, its baseline from the same run, the ratio and
the verdict against `targets.TARGETS`), the Markdown table, one verdict per case, and what the
run was measured on."""

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.targets import TARGETS

MET, MISSED, INFO = "met", "missed", "info"


@dataclass
class Row:
    """One line of the table: a measurement, its baseline from the same run, the ratio, and
    the verdict against TARGETS[key]."""

    key: str
    case: str
    measured: float | None
    baseline: float | None
    unit: str
    ratio: float | None
    ratio_meaning: str
    target: str
    status: str
    """met, missed, info (no target), or "not available: …" (nothing measured)."""


def row(
    key: str,
    case: str,
    measured: float,
    baseline: float,
    unit: str,
    ratio: float,
    ratio_meaning: str,
) -> Row:
    """A measured row, judged against its target in TARGETS."""
    target = TARGETS[key]
    if target is None:
        return Row(key, case, measured, baseline, unit, ratio, ratio_meaning, "none", INFO)
    status = MET if target.met(ratio) else MISSED
    return Row(key, case, measured, baseline, unit, ratio, ratio_meaning, str(target), status)


def unavailable(key: str, case: str, unit: str, ratio_meaning: str, reason: str) -> Row:
    """A row whose case could not be measured, with its target and the reason."""
    target = TARGETS[key]
    shown = "none" if target is None else str(target)
    return Row(key, case, None, None, unit, None, ratio_meaning, shown, reason)


def in_table_order(rows: list[Row]) -> list[Row]:
    """The rows in the order of TARGETS' keys (each case's rows in the order measured)."""
    order = {key: position for position, key in enumerate(TARGETS)}
    return sorted(rows, key=lambda line: order[line.key])


def reply_detail(body: bytes | memoryview) -> str:
    """The start of an error response's `detail` (or of its body), for a table cell."""
    try:
        text = str(orjson.loads(body).get("detail", ""))
    except (orjson.JSONDecodeError, AttributeError):
        text = bytes(body[:200]).decode("utf-8", "replace")
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= 90 else text[:89] + "…"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def format_value(value: float | None, unit: str) -> str:
    """A measurement in a readable unit."""
    if value is None or math.isnan(value):
        return "–"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| case | measured | baseline | ratio | target | met | ratio means |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in rows:
        if line.unit == "s / entries" and line.measured is not None and line.baseline is not None:
            measured = f"{line.measured * 1000:.1f} ms at the top"
            baseline = f"{line.baseline:,.0f} numbers"
        else:
            measured = format_value(line.measured, line.unit)
            baseline = format_value(line.baseline, line.unit)
        ratio = "–" if line.ratio is None else f"{line.ratio:.3g}"
        lines.append(
            f"| {line.case} | {measured} | {baseline} | {ratio} | {line.target} | "
            f"{line.status} | {line.ratio_meaning} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> str:
    """One line per case key with a target: met, missed (with the rows that missed), or why it
    was not measured."""
    lines = []
    for key, target in TARGETS.items():
        if target is None:
            continue
        mine = [line for line in rows if line.key == key]
        if not mine:
            continue
        missed = [line.case for line in mine if line.status == MISSED]
        other = [line.status for line in mine if line.status not in (MET, MISSED)]
        if other:
            verdict = other[0]
        elif missed:
            verdict = f"MISSED ({'; '.join(missed)})"
        else:
            verdict = MET
        lines.append(f"case {key} ({target}, {target.source}): {verdict}")
    return "\n".join(lines)
