"""Results of the hardening suite (tests/test_hardening_*.py) and the docs/reliability.md renderer.

Tests call :func:`record` with one row per fault or bad input; rows go to
``build/hardening/results.json`` (``MENET_HARDENING_RESULTS`` overrides the folder).
``python tests/hardening_results.py`` renders docs/reliability.md from that file.
Not a test module.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def results_path() -> Path:
    folder = Path(os.environ.get("MENET_HARDENING_RESULTS", REPO / "build" / "hardening"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "results.json"


def record(kind: str, name: str, **fields: Any) -> None:
    """Add or replace the row ``(kind, name)``; ``kind`` is ``fault``, ``input`` or ``soak``."""
    path = results_path()
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        rows = []
    rows = [r for r in rows if (r.get("kind"), r.get("name")) != (kind, name)]
    rows.append({"kind": kind, "name": name, "recorded": time.strftime("%Y-%m-%d %H:%M:%S"), **fields})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _fmt(v: Any, bad: bool | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        text = "yes" if v else "no"
        return f"**{text}**" if v == bad else text
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|")


def render(rows: list[dict[str, Any]]) -> str:
    faults = sorted((r for r in rows if r["kind"] == "fault"), key=lambda r: r["name"])
    inputs = sorted((r for r in rows if r["kind"] == "input"), key=lambda r: r["name"])
    soak = sorted((r for r in rows if r["kind"] == "soak"), key=lambda r: r["name"])
    out = ["## Faults injected", "",
           "| fault | source | survived | recovery (s) | events lost | duplicates delivered | notes |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in faults:
        out.append("| " + " | ".join(_fmt(r.get(k), False if k == "survived" else None) for k in
                                     ("name", "source", "survived", "recovery_s", "events_lost",
                                      "duplicates", "notes")) + " |")
    out += ["", "## Bad inputs", "", "| input | tried | counted / rejected | crashed | outcome |",
            "| --- | --- | --- | --- | --- |"]
    for r in inputs:
        out.append("| " + " | ".join(_fmt(r.get(k), True if k == "crashed" else None)
                                     for k in ("name", "tried", "counted", "crashed", "outcome")) + " |")
    out += ["", "## Memory", "", "| run | duration (s) | streams | snippets | RSS slope (MB/min), worst process | "
            "peak RSS (MB), all processes | notes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in soak:
        out.append("| " + " | ".join(_fmt(r.get(k)) for k in
                                     ("name", "duration_s", "streams", "snippets", "slope_mb_per_min",
                                      "peak_rss_mb", "notes")) + " |")
    return "\n".join(out) + "\n"


MARK_BEGIN = "<!-- BEGIN GENERATED: python tests/hardening_results.py -->"
MARK_END = "<!-- END GENERATED -->"


def update_doc(doc: Path = REPO / "docs" / "reliability.md") -> None:
    rows = json.loads(results_path().read_text())
    text = doc.read_text()
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    doc.write_text(f"{head}{MARK_BEGIN}\n\n{render(rows)}\n{MARK_END}{tail}")


if __name__ == "__main__":
    update_doc(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "reliability.md")
    print(f"rendered {results_path()} into docs/reliability.md")
