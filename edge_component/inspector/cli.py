"""``python -m inspector``: the one-shot ``inspect`` mode and the long-running ``run`` mode.

``inspect`` judges every file of a folder with a model package and writes one result message
v1 per file to a JSONL file (part id = the file name, extension included; unreadable files are
``manual`` with a reason) and exits 0. ``run`` is the service (``inspector.service``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from inspector.engine import Inspector
from inspector.messages import Identity, MessageError, encode
from inspector.runner import ModelLoadError, ModelRunner, RunnerOptions
from inspector.runtime_config import ConfigError, RuntimeConfig
from inspector.sources import DirectorySource, SourceError


class CliError(Exception):
    """Bad input to the CLI: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inspector",
        description="LineGuard inspector: judge images with a model package (pass/reject/manual).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{inspect,run,station-password}")
    sub.required = True
    one = sub.add_parser(
        "inspect",
        help="one-shot: judge every file in a folder, write one result per file (JSONL)",
        description=(
            "Judge every file in --images with the model package in --model and write one "
            "result message v1 per file to --out (JSON lines). The part id is the file name "
            "with its extension; a file that cannot be judged (corrupt, empty, truncated, "
            "oversized, odd colour mode) is 'manual' with a reason. Exits 0 when done."
        ),
    )
    one.add_argument("--model", required=True, type=Path, help="model package directory")
    one.add_argument("--images", required=True, type=Path, help="folder of images to judge")
    one.add_argument("--out", required=True, type=Path, help="results file to write (JSONL)")
    one.add_argument("--plant", default="local", help="plant id in results (default: local)")
    one.add_argument("--line", default="line-1", help="line id in results (default: line-1)")
    one.add_argument("--station", default="station-1", help="station id (default: station-1)")
    one.add_argument("--device", default="local-device", help="device id (default: local-device)")
    one.add_argument("--camera", default="folder", help="camera id in results (default: folder)")
    one.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    one.add_argument(
        "--deadline-ms",
        type=float,
        default=60_000.0,
        help="per-image budget; slower images are manual (default: 60000)",
    )
    one.add_argument(
        "--max-image-bytes", type=int, default=32 * 1024 * 1024, help="larger files are manual"
    )
    one.add_argument(
        "--max-image-pixels", type=int, default=40_000_000, help="larger images are manual"
    )
    one.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    pw = sub.add_parser(
        "station-password",
        help="add or replace a review station operator in the device's operators file",
        description=(
            "Hash an operator's password (scrypt) into the review station's operators file "
            "(JSON, created with mode 600; docs/review-station.md). The password is read from "
            "the terminal, or from the first line of stdin when it is not a terminal."
        ),
    )
    pw.add_argument("--operator", required=True, help="operator name (letters, digits, . _ -)")
    pw.add_argument("--file", required=True, type=Path, help="the operators file to update")
    pw.add_argument(
        "--bind",
        help="this device's address for the station: the plant-network interface the tablets "
        "use (kept from the file when not given)",
    )
    pw.add_argument(
        "--host",
        action="append",
        help="a host name the tablets use for this device's station (repeat; replaces the "
        "file's list when given)",
    )
    sub.add_parser(
        "run",
        help="long-running service (any transport); see 'run --help'",
        add_help=False,
        prefix_chars="\0",  # every argument goes to the service untouched, --help included
    ).add_argument("args", nargs=argparse.REMAINDER)
    return parser


def inspect(args: argparse.Namespace) -> int:
    """The one-shot mode: judge every file in ``args.images``; return the exit code."""
    try:
        identity = Identity(args.plant, args.line, args.station, args.device)
        config = RuntimeConfig(
            deadline_ms=args.deadline_ms,
            intra_op_threads=args.threads,
            max_image_bytes=args.max_image_bytes,
            max_image_pixels=args.max_image_pixels,
        )
    except (MessageError, ConfigError) as exc:
        raise CliError(str(exc)) from None
    try:
        source = DirectorySource(args.images, camera=args.camera, max_bytes=config.max_image_bytes)
    except SourceError as exc:
        raise CliError(str(exc)) from None
    try:
        runner = ModelRunner.load(
            args.model, RunnerOptions(intra_op_threads=config.intra_op_threads, max_batch=1)
        )
    except ModelLoadError as exc:
        raise CliError(f"cannot load model package {args.model}: {exc}") from None
    counter = iter(range(1, 1 << 62))
    engine = Inspector(identity, runner=runner, config=config, seq=lambda: next(counter))
    files = source.files()
    progress = not args.quiet
    if progress:
        print(f"judging {len(files)} file(s) in {args.images} with {runner.ref}", file=sys.stderr)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = args.out.open("wb")
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    with out:
        for index, path in enumerate(files, start=1):
            result = engine.judge(source.frame_for(path))
            out.write(encode(result) + b"\n")
            counts[result["decision"]] += 1
            if progress:
                reason = f" ({result['reason']})" if result.get("reason") else ""
                print(
                    f"[{index}/{len(files)}] {path.name}: {result['decision']}{reason}",
                    file=sys.stderr,
                )
    if progress:
        summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("pass", "reject", "manual"))
        elapsed = time.monotonic() - started
        print(
            f"wrote {len(files)} result(s) to {args.out}: {summary} in {elapsed:.1f} s",
            file=sys.stderr,
        )
    return 0


def station_password(args: argparse.Namespace) -> int:
    """Add or replace one operator's password hash in a review station operators file."""
    import getpass
    import json
    import os

    from inspector.messages import OPERATOR_NAME
    from inspector.station_auth import CredentialError, check_bind, check_host, hash_password

    if not OPERATOR_NAME.match(args.operator):
        raise CliError(
            f"--operator {args.operator!r}: letters, digits, '.', '_', '-', at most 32 characters"
        )
    try:
        bind = check_bind(args.bind) if args.bind is not None else None
        hosts = [check_host(h) for h in args.host] if args.host is not None else None
    except ValueError as exc:
        raise CliError(f"--bind/--host: {exc}") from None
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.operator}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        encoded = hash_password(password)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    doc: dict[str, object] = {"operators": {}}
    if args.file.exists():
        try:
            doc = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CliError(f"{args.file}: cannot read it as JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("operators"), dict):
            raise CliError(f'{args.file}: not an operators file (no "operators" object)')
    operators = doc["operators"]
    assert isinstance(operators, dict)
    operators[args.operator] = encoded
    if bind is not None:
        doc["bind"] = bind
    if hosts is not None:
        doc["hosts"] = hosts
    args.file.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.file.with_name(args.file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, args.file)
    print(f"{args.file}: operator {args.operator} set", file=sys.stderr)
    return 0


def run(argv: Sequence[str]) -> int:
    """The long-running mode: hand the arguments to ``inspector.service.main``."""
    try:
        from inspector import service
    except ImportError as exc:
        raise CliError(f"the run mode is not available: {exc}") from None
    code = service.main(list(argv))
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m inspector``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["run"]:
        try:
            return run(argv[1:])
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    args = _parser().parse_args(argv)
    try:
        if args.command == "station-password":
            return station_password(args)
        return inspect(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
