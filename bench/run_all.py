"""Run every benchmark in bench/ and collect what each prints into one JSON file and one HTML page.

Each ``bench/*.py`` script (except this one and files starting with ``_``) runs in its own process
with a timeout; it prints one JSON object on stdout (progress goes to stderr, which is passed
through). A script that fails, times out or prints no JSON is recorded as failed; the others still
run. Writes ``<out>/results.json`` and ``<out>/report.html``; exits 1 when any script failed.

    python bench/run_all.py [--only NAME ...] [--timeout S] [--out out/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `demo` importable
    sys.path.insert(0, str(REPO))


def discover(bench_dir: Path, only: Sequence[str] = ()) -> list[Path]:
    """The benchmark scripts to run, sorted; ``only`` filters by substring of the file name."""
    scripts = [
        p
        for p in sorted(bench_dir.glob("*.py"))
        if p.name != "run_all.py" and not p.name.startswith("_")
    ]
    if only:
        scripts = [p for p in scripts if any(o in p.name for o in only)]
    return scripts


def parse_json_output(stdout: str) -> Any:
    """The JSON a script printed: the whole stdout, else its last line that parses."""
    text = stdout.strip()
    if not text:
        raise ValueError("printed nothing on stdout")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    raise ValueError(f"stdout is not JSON (starts {text[:80]!r})")


def _pump(stream: IO[str], sink: list[str] | deque[str], echo: str | None) -> None:
    for line in stream:
        sink.append(line)
        if echo is not None:
            sys.stderr.write(f"  [{echo}] {line}")
            sys.stderr.flush()


def run_script(script: Path, timeout_s: float, *, echo: bool = True) -> dict[str, Any]:
    """Run one benchmark script; never raises for the script's own failures."""
    started = time.monotonic()
    record: dict[str, Any] = {"script": script.name, "ok": False, "exit_code": None}
    try:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so a timeout kills the script's children too
        )
    except OSError as exc:
        record.update(error=f"cannot start: {exc}", duration_s=0.0)
        return record
    out: list[str] = []
    err: deque[str] = deque(maxlen=20)
    assert proc.stdout is not None and proc.stderr is not None
    threads = [
        threading.Thread(target=_pump, args=(proc.stdout, out, None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, script.stem if echo else None), daemon=True),
    ]  # fmt: skip
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        record["error"] = f"timed out after {timeout_s:g} s"
    for t in threads:
        t.join(timeout=5)
    record["duration_s"] = round(time.monotonic() - started, 2)
    record["exit_code"] = proc.returncode
    record["stderr_tail"] = "".join(err)[-2000:]
    if "error" in record:
        return record
    if proc.returncode != 0:
        record["error"] = f"exit code {proc.returncode}"
        return record
    try:
        record["result"] = parse_json_output("".join(out))
    except ValueError as exc:
        record["error"] = str(exc)
        return record
    record["ok"] = True
    return record


def flatten(value: Any, prefix: str = "", limit: int = 200) -> list[tuple[str, Any]]:
    """Nested JSON as (dotted key, scalar) rows; long lists are summarised."""
    rows: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k), limit)
    elif isinstance(value, list) and value and all(not isinstance(v, dict | list) for v in value):
        shown = ", ".join(str(v) for v in value[:8])
        rows.append((prefix, f"[{shown}{', …' if len(value) > 8 else ''}] ({len(value)} items)"))
    elif isinstance(value, list):
        for i, v in enumerate(value[:20]):
            rows += flatten(v, f"{prefix}[{i}]", limit)
        if len(value) > 20:
            rows.append((f"{prefix}[…]", f"{len(value) - 20} more items"))
    else:
        rows.append((prefix or "value", value))
    return rows[:limit]


def render_html(results: dict[str, Any]) -> str:
    """The benchmark page, in the demo report's style."""
    from demo.report import Raw, Section, esc, figure_png, img_tag, not_run, ok_fail, page, table

    runs = results["runs"]
    sections = []
    if runs:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.35 * len(runs)), dpi=100)
        ax.barh([r["script"] for r in runs], [r.get("duration_s", 0) for r in runs],
                color=["#2e7d32" if r["ok"] else "#c62828" for r in runs])  # fmt: skip
        ax.invert_yaxis()
        ax.set_xlabel("wall time (s)")
        fig.tight_layout()
        overview = img_tag(figure_png(fig), "benchmark wall times") + table(
            ["script", "status", "wall time s", "exit code", "error"],
            [(r["script"], ok_fail(r["ok"], "ok", "FAILED"), r.get("duration_s", ""),
              r.get("exit_code", ""), r.get("error", "")) for r in runs],
            (2, 3),
        )  # fmt: skip
    else:
        overview = not_run("no benchmark scripts found.")
    sections.append(Section("overview", "Benchmarks", overview))
    for r in runs:
        anchor = "bench-" + r["script"].removesuffix(".py").replace("_", "-")
        if r["ok"]:
            body = table(["figure", "value"], flatten(r["result"]))
        else:
            tail = f"<pre>{esc(r.get('stderr_tail', ''))}</pre>" if r.get("stderr_tail") else ""
            body = Raw(f'<p class="error">{esc(r.get("error", "failed"))}</p>{tail}').html
        sections.append(Section(anchor, r["script"], body))
    subtitle = f"generated {results['generated_at']} · {results['python']} · {results['machine']}"
    return page("LineGuard benchmarks", subtitle, sections)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run the benchmarks, write results.json and report.html."""
    p = argparse.ArgumentParser(prog="python bench/run_all.py", description=__doc__.splitlines()[0])
    p.add_argument("--bench-dir", type=Path, default=REPO / "bench", help="scripts to run")
    p.add_argument(
        "--only", nargs="+", default=[], help="run only scripts whose name contains these"
    )
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per script (default %(default)s)"
    )
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench", help="output directory")
    args = p.parse_args(argv)
    scripts = discover(args.bench_dir, args.only)
    if not scripts:
        print(
            f"error: no benchmark scripts in {args.bench_dir} match {args.only or '*'}",
            file=sys.stderr,
        )
        return 2
    runs = []
    for i, script in enumerate(scripts, 1):
        print(f"bench {i}/{len(scripts)}: {script.name} ...", file=sys.stderr, flush=True)
        record = run_script(script, args.timeout)
        status = "ok" if record["ok"] else f"FAILED ({record.get('error')})"
        print(f"bench {i}/{len(scripts)}: {script.name} {status} in {record['duration_s']} s",
              file=sys.stderr, flush=True)  # fmt: skip
        runs.append(record)
    uname = os.uname()
    results = {
        "v": 1,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": sys.version.split()[0],
        "machine": f"{uname.sysname} {uname.machine}, {os.cpu_count()} CPUs",
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "report.html").write_text(render_html(results), encoding="utf-8")
    failed = [r["script"] for r in runs if not r["ok"]]
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.html'}")
    if failed:
        print(
            f"{len(failed)} of {len(runs)} benchmarks failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    print(f"all {len(runs)} benchmarks ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
