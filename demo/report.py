"""The demo report: one static HTML page, plots embedded as PNG data URIs, no network, no JS.

Input is a plain dict (or a JSON file) whose shape is documented in docs/demo-report.md. Every
section renders on its own: missing data shows "Not run", bad data shows what was wrong, and
neither stops the other sections.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DECISION_COLOURS = {"pass": "#2e7d32", "reject": "#c62828", "manual": "#ef6c00"}
JSONL_FIELDS = ("results", "health")  # top-level fields that may be given as a JSONL file path

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2330;background:#f4f6f9;line-height:1.45}
header{background:#17324d;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px}
nav{padding:8px 32px;background:#e3e9f0;font-size:13px}
nav a{margin-right:14px;color:#17324d;text-decoration:none}
main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border-radius:6px;padding:14px 20px;margin:16px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:18px;margin:4px 0 10px;color:#17324d}
h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #e2e6ea;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0;border:1px solid #eef0f2}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid figure{margin:0;flex:1 1 340px}
figcaption{font-size:12px;color:#555}
.not-run{color:#6b7280;font-style:italic;background:#f7f7f9;padding:10px;border-radius:4px;
border-left:4px solid #c4c9d1}
.error{color:#8a1c1c;background:#fdecec;padding:10px;border-radius:4px;
border-left:4px solid #c62828}
.statement{font-size:15px;background:#eef6ee;border-left:4px solid #2e7d32;padding:10px 14px}
.ok{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}
.muted{color:#6b7280}
code{background:#f0f3f6;padding:0 3px;border-radius:3px}
"""


class ReportError(ValueError):
    """Invalid report input."""


@dataclass
class Section:
    """One rendered section of the page."""

    anchor: str
    title: str
    body: str


# ---------------------------------------------------------------------------------------------
# page building blocks (also used by bench/run_all.py)


def esc(value: Any) -> str:
    """HTML-escape any value's text."""
    return html.escape(str(value))


def not_run(what: str) -> str:
    """The box a section shows when its data is absent."""
    return f'<p class="not-run">Not run: {esc(what)}</p>'


def error_box(what: str) -> str:
    """The box a section shows when its data could not be rendered."""
    return f'<p class="error">Could not render this section: {esc(what)}</p>'


def png_data_uri(png: bytes) -> str:
    """A data: URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: Any) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG embedded."""
    return f'<img class="plot" alt="{esc(alt)}" src="{png_data_uri(png)}">'


def table(
    headers: Sequence[str] | None, rows: Iterable[Sequence[Any]], num_cols: Iterable[int] = ()
) -> str:
    """A simple HTML table (no header row when ``headers`` is None); ``Raw`` cells are as is."""
    num_cols = set(num_cols)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers or ())
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in num_cols else ""
            text = cell.html if isinstance(cell, Raw) else esc(cell)
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class Raw:
    """Pre-escaped HTML for a table cell."""

    html: str


def ok_fail(passed: bool | None, yes: str = "pass", no: str = "FAIL") -> Raw:
    """A coloured pass/fail cell."""
    if passed is None:
        return Raw('<span class="muted">not reached</span>')
    cls, text = ("ok", yes) if passed else ("fail", no)
    return Raw(f'<span class="{cls}">{esc(text)}</span>')


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """A whole self-contained HTML page."""
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def human_bytes(n: float) -> str:
    """Bytes in B, kB, MB or GB (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _ts(value: Any) -> float:
    """Seconds since the epoch from an RFC 3339 string or a number."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# sections


def section_summary(data: dict[str, Any]) -> str:
    """Run facts and notes."""
    summary = data.get("summary") or {}
    notes = data.get("notes") or []
    if not summary and not notes:
        return not_run("no summary in the data.")
    parts = []
    if summary:
        parts.append(table(None, [(k, _fmt(v)) for k, v in summary.items()]))
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def section_latency(data: dict[str, Any]) -> str:
    """Histogram of the inspector's per-frame inference latency."""
    results = data.get("results") or []
    lat = np.array([r["latency_ms"] for r in results if r.get("latency_ms") is not None], float)
    if lat.size == 0:
        return not_run("no inspector results with latency_ms.")
    p50, p99 = np.percentile(lat, [50, 99])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    ax.hist(lat, bins=min(60, max(10, lat.size // 10)), color="#4a78a8")
    for value, name, style in ((p50, "p50", "--"), (p99, "p99", ":")):
        ax.axvline(value, color="black", ls=style, lw=1)
        ax.text(value, ax.get_ylim()[1] * 0.92, f" {name} {value:.1f} ms", fontsize=8)
    ax.set_xlabel("inference latency per frame (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"{lat.size:,} frames")
    fig.tight_layout()
    stats = table(
        ["frames", "p50 ms", "p99 ms", "max ms", "mean ms"],
        [(f"{lat.size:,}", f"{p50:.1f}", f"{p99:.1f}", f"{lat.max():.1f}", f"{lat.mean():.1f}")],
        num_cols=range(5),
    )
    health = data.get("health") or []
    extra = ""
    if health:
        rows = []
        last: dict[str, dict[str, Any]] = {}
        for h in health:
            last[str(h.get("device", "?"))] = h
        for device, h in sorted(last.items()):
            # the inspector's health message v1 nests latency: {"latency_ms": {"p50", "p99", "max"}}
            nested: dict[str, Any] = (
                h["latency_ms"] if isinstance(h.get("latency_ms"), dict) else {}
            )
            p50h = nested.get("p50", h.get("latency_p50_ms"))
            p99h = nested.get("p99", h.get("latency_p99_ms"))
            rows.append(
                (device, h.get("model", ""), _fmt(p50h), _fmt(p99h), _fmt(h.get("frames")),
                 _fmt(h.get("backlog")), _fmt(h.get("healthy")), h.get("ts", ""))
            )  # fmt: skip
        extra = "<h3>Last health message per device</h3>" + table(
            ["device", "model", "p50 ms", "p99 ms", "frames", "journal backlog", "healthy", "ts"],
            rows,
            (2, 3, 4),
        )
    return img_tag(figure_png(fig), "latency histogram") + stats + extra


def section_decisions(data: dict[str, Any]) -> str:
    """Every frame's decision over time, one row per camera."""
    results = [r for r in (data.get("results") or []) if "ts" in r and "decision" in r]
    if not results:
        return not_run("no inspector results with ts and decision.")
    t0 = min(_ts(r["ts"]) for r in results)
    cameras = sorted({str(r.get("camera", "?")) for r in results})
    row = {c: i for i, c in enumerate(cameras)}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(cameras) + 1.2), dpi=100)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    by_decision: dict[str, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for r in results:
        cam, decision = str(r.get("camera", "?")), str(r["decision"])
        counts[cam][decision] += 1
        xs, ys = by_decision[decision]
        xs.append(_ts(r["ts"]) - t0)
        ys.append(row[cam])
    for decision in sorted(by_decision, key=lambda d: d != "pass"):
        xs, ys = by_decision[decision]
        big = decision != "pass"
        ax.scatter(xs, ys, s=28 if big else 6, marker="x" if decision == "reject" else "o",
                   color=DECISION_COLOURS.get(decision, "#555"), label=f"{decision} ({len(xs)})",
                   zorder=3 if big else 2)  # fmt: skip
    ax.set_yticks(range(len(cameras)), cameras)
    ax.set_ylim(-0.6, len(cameras) - 0.4)
    ax.set_xlabel("time since the first frame (s)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4)
    fig.tight_layout()
    decisions = sorted({d for c in counts.values() for d in c}, key=lambda d: d != "pass")
    rows = [
        [cam, *[counts[cam][d] for d in decisions], sum(counts[cam].values())] for cam in cameras
    ]
    return img_tag(figure_png(fig), "decisions over time per camera") + table(
        ["camera", *decisions, "frames"], rows, range(1, len(decisions) + 2)
    )


def _load_array(value: Any, base: Path) -> np.ndarray:
    """An image or map from a nested list, a .npy file or an image file (relative to base)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list):
        return np.asarray(value, dtype=float)
    path = Path(str(value))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ReportError(f"image file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _anomaly_figure(item: dict[str, Any], base: Path) -> bytes:
    image = _load_array(item["image"], base) if item.get("image") is not None else None
    amap = _load_array(item["map"], base) if item.get("map") is not None else None
    if image is None and amap is None:
        raise ReportError(f"part {item.get('part_id')}: needs an image or a map")
    panels = [p for p in ("image", "map", "overlay") if (p != "overlay" or image is not None)]
    panels = [p for p in panels if not (p in ("map", "overlay") and amap is None)]
    panels = [p for p in panels if not (p == "image" and image is None)]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), dpi=100)
    axes = np.atleast_1d(axes)
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_axis_off()
        ax.set_title(panel, fontsize=9)
        if panel == "image":
            ax.imshow(image, cmap="gray" if image is not None and image.ndim == 2 else None)
        elif panel == "map":
            ax.imshow(amap, cmap="inferno")
        else:
            assert image is not None and amap is not None
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            h, w = image.shape[:2]
            # the map covers the region the model judged (the whole frame without one)
            left, top, right, bottom = item.get("region") or (0, 0, w, h)
            ax.imshow(amap, cmap="jet", alpha=0.45, extent=(left, right, bottom, top))
    fig.suptitle(
        f"{item.get('camera', '')} part {item.get('part_id', '?')}  "
        f"score {_fmt(item.get('score'), 3)} / threshold {_fmt(item.get('threshold'), 3)}",
        fontsize=9,
    )
    fig.tight_layout()
    return figure_png(fig)


def section_anomaly_maps(data: dict[str, Any], base: Path, limit: int = 6) -> str:
    """The image, anomaly map and overlay of some rejected parts."""
    items = data.get("anomaly_maps") or []
    if not items:
        return not_run("no anomaly maps of rejects in the data.")
    figures = []
    for item in items[:limit]:
        try:
            png = _anomaly_figure(item, base)
        except (ReportError, OSError, ValueError, KeyError) as exc:
            figures.append(f"<figure>{error_box(str(exc))}</figure>")
            continue
        caption = f"{item.get('decision', 'reject')}: part {item.get('part_id', '?')}"
        figures.append(
            f"<figure>{img_tag(png, 'anomaly map ' + str(item.get('part_id')))}"
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    more = (
        f'<p class="muted">{len(items) - limit} more not shown.</p>' if len(items) > limit else ""
    )
    return f'<div class="grid">{"".join(figures)}</div>{more}'


def section_plc(data: dict[str, Any], max_rows: int = 200) -> str:
    """Rejects the inspector sent against the rejects the PLC saw."""
    plc = data.get("plc")
    if not plc:
        return not_run("no PLC log in the data.")
    seen_list = plc.get("seen") or []
    expected_list = plc.get("expected")
    if expected_list is None:
        expected_list = [
            r for r in (data.get("results") or []) if r.get("decision") in ("reject", "manual")
        ]
    expected: dict[str, dict[str, Any]] = {}
    for e in expected_list:
        e = e if isinstance(e, dict) else {"part_id": e}
        expected.setdefault(str(e["part_id"]), e)
    seen: dict[str, dict[str, Any]] = {}
    seen_counts: Counter[str] = Counter()
    for s in seen_list:
        s = s if isinstance(s, dict) else {"part_id": s}
        pid = str(s["part_id"])
        seen_counts[pid] += 1
        seen.setdefault(pid, s)
    missing = [p for p in expected if p not in seen]
    unexpected = [p for p in seen if p not in expected]
    delays = []
    rows = []
    for pid, e in expected.items():
        s = seen.get(pid)
        delay = ""
        if s is not None and e.get("ts") is not None and s.get("ts") is not None:
            d = (_ts(s["ts"]) - _ts(e["ts"])) * 1e3
            delays.append(d)
            delay = f"{d:.0f}"
        rows.append(
            (pid, e.get("camera", ""), e.get("decision", ""), _fmt(e.get("score"), 3),
             e.get("ts", ""), s.get("ts", "") if s else "", delay, ok_fail(s is not None, "seen", "MISSED"))
        )  # fmt: skip
    for pid in unexpected:
        s = seen[pid]
        rows.append((pid, s.get("camera", ""), "(not expected)", "", "", s.get("ts", ""), "",
                     Raw('<span class="fail">unexpected</span>')))  # fmt: skip
    dup = sum(c - 1 for c in seen_counts.values())
    summary: list[tuple[str, Any]] = [
        ("rejects expected (inspector)", len(expected)),
        ("rejects seen by the PLC", sum(1 for p in expected if p in seen)),
        ("missed", len(missing)),
        ("unexpected at the PLC", len(unexpected)),
        ("duplicates dropped (at-least-once)", dup),
    ]
    if delays:
        summary.append(("inspector → PLC delay p50 / max (ms)",
                        f"{np.percentile(delays, 50):.0f} / {max(delays):.0f}"))  # fmt: skip
    verdict = (
        '<p class="ok">Every expected reject reached the PLC.</p>'
        if not missing and expected
        else f'<p class="fail">{len(missing)} expected reject(s) did not reach the PLC.</p>'
        if missing
        else '<p class="muted">No rejects were expected in this run.</p>'
    )
    shown = rows[:max_rows]
    more = (
        f'<p class="muted">{len(rows) - max_rows} more rows not shown.</p>'
        if len(rows) > max_rows
        else ""
    )
    return (
        verdict
        + table(None, summary, (1,))
        + "<h3>Expected against seen</h3>"
        + table(
            ["part", "camera", "decision", "score", "inspector ts", "PLC ts", "delay ms", "seen"],
            shown,
            (3, 6),
        )
        + more
    )


def section_bytes(data: dict[str, Any]) -> str:
    """Bytes sent upstream against what sending every image would have cost."""
    b = data.get("bytes")
    if not b:
        return not_run("no byte counts in the data.")
    upstream = {k: int(v) for k, v in (b.get("upstream") or {}).items()}
    images = int(b["images_bytes"])
    frames = int(b.get("frames", 0))
    total_up = sum(upstream.values())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.2 + 0.3 * len(upstream)), dpi=100)
    labels = ["send every image (cloud)", *[f"edge: {k}" for k in upstream], "edge: total"]
    values = [images, *upstream.values(), total_up]
    colours = ["#c62828", *["#81c784"] * len(upstream), "#2e7d32"]
    ax.barh(labels, [max(v, 1) for v in values], color=colours)
    for i, v in enumerate(values):
        ax.text(max(v, 1), i, f" {human_bytes(v)}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("bytes upstream (log scale)")
    fig.tight_layout()
    ratio = images / total_up if total_up else float("inf")
    rows = [("frames", f"{frames:,}"), ("images (would be sent)", f"{images:,} B")]
    rows += [(f"upstream: {k}", f"{v:,} B") for k, v in upstream.items()]
    rows += [("upstream total", f"{total_up:,} B"), ("images / upstream", f"{ratio:,.0f}×")]
    if frames:
        rows.append(
            (
                "per frame: image / upstream",
                f"{images / frames:,.0f} B / {total_up / frames:,.0f} B",
            )
        )
    return img_tag(figure_png(fig), "bytes upstream") + table(None, rows, (1,))


def rollout_from_controller(
    doc: dict[str, Any], bake_s: float | dict[str, float] | None = None
) -> dict[str, Any]:
    """The report's rollout shape from ``rollout``'s controller report / state JSON.

    The controller keeps ``deployed_at`` and ``reached_at`` (clock seconds) per ring; a ring's bake
    ends ``bake_s`` after it was reached (a number, or per ring), else when the next ring starts.
    """
    names = list(doc["rings"])
    starts = [doc["rings"][n].get("deployed_at") for n in names]
    t0 = min((t for t in starts if t is not None), default=0.0)

    def rel(t: Any) -> float | None:
        return None if t is None else float(t) - t0

    rings = []
    for i, name in enumerate(names):
        rs = doc["rings"][name]
        bake = bake_s.get(name) if isinstance(bake_s, dict) else bake_s
        reached = rs.get("reached_at")
        bake_end: float | None
        if bake is not None and reached is not None:
            bake_end = float(reached) + float(bake)
        else:
            bake_end = starts[i + 1] if i + 1 < len(names) else None
        gates = [
            {"name": g.get("gate"), "value": g.get("value"), "threshold": g.get("limit"),
             "passed": g.get("passed"), "detail": g.get("detail", "")}
            for g in rs.get("gates") or []
        ]  # fmt: skip
        if rs.get("phase") == "passed":
            passed: bool | None = True
        elif gates:
            passed = all(bool(g["passed"]) for g in gates)
        else:
            passed = None
        rings.append(
            {"ring": name, "devices": (rs.get("health") or {}).get("devices", "?"),
             "deploy_started_s": rel(rs.get("deployed_at")), "deployed_s": rel(reached),
             "bake_ended_s": rel(bake_end), "gated_s": rel(bake_end) if gates else None,
             "passed": passed, "gates": gates, "phase": rs.get("phase")}
        )  # fmt: skip
    failed = doc.get("failed_gates") or []
    out: dict[str, Any] = {
        "release": doc.get("model_version", "?"),
        "outcome": {"completed": "succeeded"}.get(doc.get("status", ""), doc.get("status")),
        "message": doc.get("message", ""),
        "rings": rings,
    }
    if failed:
        out["failed_gate"] = f"{failed[0].get('ring')}: {failed[0].get('gate')}"
    return out


def section_rollout(data: dict[str, Any]) -> str:
    """The staged rollout: per ring deploy, bake and gate, as a timeline and a table."""
    r = data.get("rollout")
    if not r:
        return not_run("no rollout report in the data.")
    if isinstance(r.get("rings"), dict):
        r = rollout_from_controller(r, data.get("rollout_bake_s"))
    rings = r.get("rings") or []
    if not rings:
        return not_run("the rollout report has no rings.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.55 * len(rings) + 0.6), dpi=100)
    for i, ring in enumerate(rings):
        start, deployed = ring.get("deploy_started_s"), ring.get("deployed_s")
        baked, gated = ring.get("bake_ended_s"), ring.get("gated_s")
        if start is not None and deployed is not None:
            ax.barh(
                i, deployed - start, left=start, color="#4a78a8", label="deploy" if i == 0 else None
            )
        if deployed is not None and baked is not None:
            ax.barh(
                i,
                baked - deployed,
                left=deployed,
                color="#b0c4de",
                label="bake" if i == 0 else None,
            )
        if gated is not None:
            passed = ring.get("passed")
            ax.plot(gated, i, marker="D" if passed else "X", markersize=9,
                    color="#2e7d32" if passed else "#c62828", zorder=3)  # fmt: skip
        if ring.get("rolled_back_s") is not None:
            ax.plot(ring["rolled_back_s"], i, marker="<", markersize=9, color="#c62828")
            ax.text(ring["rolled_back_s"], i + 0.3, " rolled back", fontsize=7, color="#c62828")
    ax.set_yticks(range(len(rings)), [f"{x.get('ring')} ({x.get('devices', '?')})" for x in rings])
    ax.invert_yaxis()
    ax.set_xlabel("time since the rollout started (s); ◆ gate passed, ✕ gate failed")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    outcome = str(r.get("outcome", "unknown"))
    head = [
        ("release", r.get("release", r.get("version", "?"))),
        (
            "outcome",
            Raw(
                f'<span class="{"ok" if outcome == "succeeded" else "fail"}">{esc(outcome)}</span>'
            ),
        ),
    ]
    if r.get("failed_gate"):
        head.append(("failed gate", r["failed_gate"]))
    if r.get("message"):
        head.append(("message", r["message"]))
    if r.get("previous"):
        head.insert(1, ("previous release", r["previous"]))
    ring_rows = [
        (x.get("ring"), x.get("devices", ""), _fmt(x.get("deploy_started_s")), _fmt(x.get("deployed_s")),
         _fmt(x.get("bake_ended_s")), _fmt(x.get("gated_s")), ok_fail(x.get("passed")),
         str(x.get("phase") or "").replace("_", " "))
        for x in rings
    ]  # fmt: skip
    gate_rows = []
    for x in rings:
        for g in x.get("gates") or []:
            gate_rows.append(
                (x.get("ring"), g.get("name"), _fmt(g.get("value"), 3), g.get("op", ""),
                 _fmt(g.get("threshold"), 3), ok_fail(g.get("passed")), g.get("detail", ""))
            )  # fmt: skip
    gates = (
        table(["ring", "gate", "value", "", "threshold", "result", "detail"], gate_rows, (2, 4))
        if gate_rows
        else not_run("no gate figures in the rollout report.")
    )
    return (
        img_tag(figure_png(fig), "rollout timeline")
        + table(None, head)
        + "<h3>Rings</h3>"
        + table(
            [
                "ring",
                "devices",
                "deploy start s",
                "deployed s",
                "bake end s",
                "gate s",
                "gate",
                "phase",
            ],
            ring_rows,
            (1, 2, 3, 4, 5),
        )  # fmt: skip
        + "<h3>Gate figures</h3>"
        + gates
    )


def section_plant_model(data: dict[str, Any]) -> str:
    """The plant-scale model: latency and uplink use against N, and where the cloud saturates."""
    model = data.get("plant_model")
    if not model:
        return not_run("the plant-scale model was not run.")
    from demo import plant_model

    pngs = []
    for fn, alt in (
        (plant_model.plot_latency, "plant latency"),
        (plant_model.plot_utilisation, "plant uplink"),
    ):
        buf = io.BytesIO()
        fn(model, buf)
        pngs.append(img_tag(buf.getvalue(), alt))
    m, a = model["measured"], model["assumptions"]
    inputs = [
        ("image size (measured)", f"{m['image_bytes']:,.0f} B"),
        ("result message size (measured)", f"{m['result_bytes']:,.0f} B"),
        ("inference latency p50 / p99", f"{m['latency_p50_ms']:.1f} / {m['latency_p99_ms']:.1f} ms ({m.get('source', '')})"),
        ("frame rate per machine", f"{a['frame_rate_hz']:g} image/s"),
        ("round trip to the cloud", f"{a['rtt_ms']:g} ms"),
        ("protocol overhead", f"×{a['protocol_overhead']:g}"),
        ("cloud inference speed-up", f"×{a['cloud_speedup']:g}"),
        ("plant time simulated per point", f"{a['window_s']:g} s"),
    ]  # fmt: skip
    rows = []
    for u in model["uplinks"]:
        sim = u.get("cloud_saturation_machines_simulated")
        over = u.get("cloud_p99_over_deadline_from")
        rows.append(
            (f"{u['uplink_mbps']:g} Mbps", f"{u['cloud_saturation_machines_analytic']:,.0f}",
             "—" if sim is None else f"{sim:,}", "—" if over is None else f"{over:,}",
             f"{u['edge_utilisation_at_max']:.2%}", f"{u['edge_saturation_machines_analytic']:,.0f}")
        )  # fmt: skip
    return (
        f'<p class="statement">{esc(model.get("statement", ""))}</p>'
        + f'<div class="grid"><figure>{pngs[0]}</figure><figure>{pngs[1]}</figure></div>'
        + table(
            [
                "uplink",
                "cloud saturates at N (U / image bits)",
                "queue grows from N (simulated)",
                f"cloud p99 > {a['deadline_ms']:g} ms from N",
                f"edge uplink use at N={max(model['machines']):,}",
                "edge would saturate at N",
            ],
            rows,
            (1, 2, 3, 4, 5),
        )  # fmt: skip
        + "<h3>Inputs and assumptions</h3>"
        + table(None, inputs)
    )


def section_review(data: dict[str, Any], base: Path, max_rows: int = 200) -> str:
    """The devices' review stations (links, the demo's login) and the labels collected."""
    review = data.get("review")
    if not review:
        return not_run("no review station data.")
    if not isinstance(review, dict):
        raise ReportError("review must be an object")
    parts = [f"<p>{esc(review.get('summary', ''))}</p>"]
    stations = review.get("stations") or []
    if stations:
        rows = [
            (s["station"], s["device"], Raw(f'<a href="{esc(s["url"])}/">{esc(s["url"])}/</a>'))
            for s in stations
        ]
        parts.append(table(["station", "device", "page (served while the line ran)"], rows))
        login = review.get("credentials") or {}
        if login:
            parts.append(
                '<p class="note">Login, <b>for this demo only</b>: operator '
                f"<code>{esc(login.get('operator'))}</code>, password "
                f"<code>{esc(login.get('password'))}</code>. A device's own operators file is "
                "written at provisioning with each person's password "
                "(<code>python -m inspector station-password</code>).</p>"
            )
    else:
        parts.append(not_run("no review station was served."))
    shot = review.get("screenshot")
    if shot:
        path = Path(shot) if Path(shot).is_absolute() else base / shot
        if path.is_file():
            parts.append(
                f"<figure>{img_tag(path.read_bytes(), 'review station page')}"
                "<figcaption>A station's page during the review turn (headless Chromium, "
                "1024 × 768)</figcaption></figure>"
            )
    labels = review.get("labels") or []
    if labels:
        label_rows: list[tuple[Any, ...]] = []
        for m in labels[:max_rows]:
            label = str(m["label"]) + (f" / {m['defect_type']}" if m.get("defect_type") else "")
            label_rows.append((f"{m.get('station', '?')}/{m['part_id']}", m.get("decision", "?"),
                               label, m.get("operator", "?"), m.get("ts", "?")))  # fmt: skip
        parts.append(table(["part", "decision", "label", "operator", "when"], label_rows))
        if len(labels) > max_rows:
            parts.append(f'<p class="muted">{len(labels) - max_rows} more not shown.</p>')
    else:
        parts.append(not_run("no labels reached the cloud."))
    return "".join(parts)


def section_field(data: dict[str, Any]) -> str:
    """One turn of the loop: the samples the devices uploaded (with the operators' labels), the
    merge with the base dataset and the next version trained on it."""
    field = data.get("field")
    if not field:
        return not_run("no samples were uploaded in this run.")
    if not isinstance(field, dict):
        raise ReportError("field must be an object")
    uploaded = field.get("uploaded") or {}
    merge = field.get("merge") or {}
    used = merge.get("used") or {}
    unlabelled = merge.get("unlabelled") or {}
    parts = [
        f"<p>The devices uploaded {int(uploaded.get('objects', 0))} sample(s), "
        f"{int(uploaded.get('bytes', 0)) / 1e6:.2f} MB, to <code>{esc(field.get('bucket_url', ''))}"
        "</code> on the local S3 (a moto server), with credentials from each core device's token "
        "exchange service. Labelled parts go under <code>good/</code> or <code>defect/&lt;type&gt;/"
        "</code>, the training dataset layout; the others under <code>unlabelled/</code>.</p>",
        table(
            ["layout", "objects"],
            sorted((k, v) for k, v in (uploaded.get("layouts") or {}).items()),
        ),
        f"<p>The merge (<code>training.merge</code>, the pipeline's <code>SamplesPrefix</code> step) "
        f"added {sum(int(v) for v in used.values())} labelled sample(s) to the base dataset "
        f"({esc(', '.join(f'{k} {v}' for k, v in sorted(used.items())) or 'none')}) and left "
        f"{sum(int(v) for v in unlabelled.values())} unlabelled one(s) out; "
        f"{int(merge.get('duplicates_dropped', 0))} duplicate(s) dropped, "
        f"{int(merge.get('skipped', 0))} object(s) skipped.</p>",
    ]
    trained = field.get("trained")
    if isinstance(trained, dict):
        parts.append(
            f"<p>{esc(trained.get('model', '?'))} was trained on the merged data: "
            f"{esc(trained.get('field_samples', 'no field figures'))}.</p>"
        )
    return "".join(parts)


SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run summary"),
    ("latency", "Inference latency"),
    ("decisions", "Decisions over time per camera"),
    ("anomaly-maps", "Anomaly maps of rejects"),
    ("plc", "Rejects seen by the PLC"),
    ("review", "Review stations and the labels collected"),
    ("field", "From the review station back to training"),
    ("bytes", "Bytes upstream against sending images"),
    ("rollout", "Staged rollout and its gates"),
    ("plant-model", "Plant scale: cloud against edge inference"),
)


def build_sections(data: dict[str, Any], base: Path) -> list[Section]:
    """Render every section; a failing one shows its error instead of stopping the page."""
    renderers: dict[str, Callable[[], str]] = {
        "summary": lambda: section_summary(data),
        "latency": lambda: section_latency(data),
        "decisions": lambda: section_decisions(data),
        "anomaly-maps": lambda: section_anomaly_maps(data, base),
        "plc": lambda: section_plc(data),
        "review": lambda: section_review(data, base),
        "field": lambda: section_field(data),
        "bytes": lambda: section_bytes(data),
        "rollout": lambda: section_rollout(data),
        "plant-model": lambda: section_plant_model(data),
    }
    out = []
    for anchor, title in SECTIONS:
        try:
            body = renderers[anchor]()
        except (KeyError, TypeError, ValueError, OSError, AttributeError) as exc:
            print(f"report: section {anchor!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
            body = error_box(f"{type(exc).__name__}: {exc}")
        out.append(Section(anchor, title, body))
    return out


def render_html(data: dict[str, Any], base: Path | None = None) -> str:
    """The whole report page for ``data`` (image paths resolve against ``base``)."""
    if not isinstance(data, dict):
        raise ReportError("report data must be a JSON object")
    generated = data.get("generated_at") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    title = str(data.get("title") or "LineGuard demo report")
    subtitle = f"generated {generated} · static page, no network needed"
    return page(title, subtitle, build_sections(data, base or Path.cwd()))


def write_report(data: dict[str, Any], out_dir: Path, base: Path | None = None) -> Path:
    """Write ``out_dir/report.html`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(render_html(data, base), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (blank lines skipped); errors name the file and line."""
    records = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ReportError(f"{path}:{n}: not JSON: {exc.msg}") from exc
    return records


def load_data(path: Path) -> dict[str, Any]:
    """Read the report JSON; list fields given as a path to a .jsonl file are read in place."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: the top level must be a JSON object")
    base = path.parent
    targets: list[tuple[dict[str, Any], str]] = [(data, f) for f in JSONL_FIELDS]
    if isinstance(data.get("plc"), dict):
        targets += [(data["plc"], "seen"), (data["plc"], "expected")]
    for holder, key in targets:
        value = holder.get(key)
        if isinstance(value, str):
            p = Path(value) if Path(value).is_absolute() else base / value
            try:
                holder[key] = read_jsonl(p)
            except OSError as exc:
                raise ReportError(
                    f"{path}: field {key!r}: cannot read {p}: {exc.strerror}"
                ) from exc
    for key in ("plant_model", "rollout"):
        value = data.get(key)
        if isinstance(value, str):
            p = Path(value) if Path(value).is_absolute() else base / value
            try:
                data[key] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ReportError(f"{path}: field {key!r}: cannot read {p}: {exc}") from exc
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build the HTML report from a data JSON file."""
    p = argparse.ArgumentParser(
        prog="python -m demo.report",
        description="Build the static LineGuard demo report (see docs/demo-report.md).",
    )
    p.add_argument("--data", type=Path, required=True, help="report data JSON")
    p.add_argument("--out", type=Path, required=True, help="directory for report.html")
    args = p.parse_args(argv)
    try:
        data = load_data(args.data)
        path = write_report(data, args.out, base=args.data.parent)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the report to {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
