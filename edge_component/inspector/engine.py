"""The per-frame path: frame → decode → preprocess → model → decision → result message v1.

:class:`Inspector` is a plain object: its collaborators (the loaded model runner, the clocks, the
``seq`` source, the model loader) are passed in, so the service wires real ones and tests pass
their own. :meth:`Inspector.judge` never raises and never returns ``pass`` for a frame it could
not judge (fail-safe → ``manual`` with a reason).

Model hot swap loads the new package beside the old one (manifest, sha256, input shape and
golden self-test are checked by :meth:`ModelRunner.load`), then switches with one reference
assignment; on failure the old model keeps serving and the engine reports unhealthy until a
swap succeeds. An optional shadow model scores every frame, never decides, and counts how its
decisions compare with the served ones (:class:`ShadowStats`).

A batch is judged by ``judge_threads`` threads (the caller's and a small pool's): each takes the
next unit of work — one frame, or a micro-batch when :attr:`ModelRunner.batch_pays` — and does
decode, preprocess and scoring for it. ONNX Runtime, Pillow and NumPy release the GIL for their
work, so with one intra-op thread per session the threads use separate cores.

:meth:`Inspector.submit` is the streaming form the service's camera loop uses: each unit goes to
the next free one of ``judge_threads`` workers as soon as it is due, so a frame never waits for
the slowest frame of a batch it happened to arrive with (that barrier cost a third of the
cameras a 2-core device could serve at p99 ≤ 100 ms).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from inspector import decision as dec
from inspector.anomaly_map import frame_map, reduce_map
from inspector.decode import UNREADABLE, DecodeLimits, FrameError, check_image, decode_image
from inspector.messages import Identity, build_result
from inspector.model_package import ModelPackage
from inspector.preprocess import combine_tiles, region
from inspector.runner import InferenceError, ModelLoadError, ModelRunner, RunnerOptions
from inspector.runtime_config import ConfigError, RuntimeConfig
from inspector.sources import Frame

LOG = logging.getLogger(__name__)

Loader = Callable[[Path, RunnerOptions], ModelRunner]


def load_runner(package: Path, options: RunnerOptions) -> ModelRunner:
    """The default loader: :meth:`ModelRunner.load` with every check on."""
    return ModelRunner.load(package, options)


@dataclass(frozen=True)
class SwapReport:
    """Outcome of a model (or shadow) swap: ok, the model now serving, and why it failed."""

    ok: bool
    model: str | None
    reason: str | None = None


@dataclass(frozen=True)
class ConfigReport:
    """Outcome of a configuration update: ok, or the error that refused it."""

    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class ShadowStats:
    """What the shadow model did since it was set, against the served model on the same frames.

    ``frames``: frames both models judged; ``agreed``: of those, how many got the same decision;
    ``both`` / ``served_only`` / ``shadow_only``: frames both rejected / only the served model
    rejected / only the shadow rejected (reject agreement: raw agreement is about
    1 - prevalence and says little); ``errors``: frames the shadow could not judge (its model
    failed, or its score was not a number), which count in none of the others. ``epoch`` tells
    one :meth:`Inspector.set_shadow` from the next, so :meth:`since` never subtracts across them.
    """

    model: str | None
    frames: int = 0
    agreed: int = 0
    errors: int = 0
    both: int = 0
    served_only: int = 0
    shadow_only: int = 0
    epoch: int = 0

    @property
    def agreement(self) -> float | None:
        """Fraction of frames where the shadow's decision equals the served decision."""
        return self.agreed / self.frames if self.frames else None

    def since(self, earlier: ShadowStats | None) -> ShadowStats:
        """The counts added after ``earlier`` (all of them if a shadow was set in between)."""
        if earlier is None or earlier.epoch != self.epoch:
            return self
        return replace(
            self,
            frames=self.frames - earlier.frames,
            agreed=self.agreed - earlier.agreed,
            errors=self.errors - earlier.errors,
            both=self.both - earlier.both,
            served_only=self.served_only - earlier.served_only,
            shadow_only=self.shadow_only - earlier.shadow_only,
        )

    def plus(self, other: ShadowStats) -> ShadowStats:
        """These counts with ``other``'s added (same model and epoch)."""
        return replace(
            self,
            frames=self.frames + other.frames,
            agreed=self.agreed + other.agreed,
            errors=self.errors + other.errors,
            both=self.both + other.both,
            served_only=self.served_only + other.served_only,
            shadow_only=self.shadow_only + other.shadow_only,
        )


@dataclass
class _Pending:
    frame: Frame
    t0: float
    verdict: dec.Verdict | None = None
    image: Image.Image | None = None
    tensors: np.ndarray | None = None  # (tiles, C, H, W)
    anomaly_map: np.ndarray | None = None  # the frame's map, reduced (anomaly_map.reduce_map)


class Inspector:
    """Judges frames with the served model and builds result messages.

    Args:
        identity: plant, line, station, device carried in every result.
        runner: the model to serve at start (None: every frame is ``manual`` / ``no_model``).
        config: runtime settings (deadline, thresholds override, batching, image limits).
        clock: monotonic seconds (latency and deadline).
        wall_clock: epoch seconds (``ts`` when a frame carries no wall time).
        seq: returns the next ``seq``; the service's journal overwrites it when it stores the
            result, so the default (0) is only a placeholder.
        loader: loads and verifies a model package (tests may wrap it).
        keep_maps: also fetch the model's anomaly map (when its package has one) and hand the
            frame's map, reduced to a small grid, to :meth:`judge_batch`'s ``maps``; off, the
            graph's map output is never read.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        runner: ModelRunner | None = None,
        config: RuntimeConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        seq: Callable[[], int] | None = None,
        loader: Loader = load_runner,
        keep_maps: bool = False,
    ) -> None:
        self.identity = identity
        self.keep_maps = keep_maps
        self.config = config or RuntimeConfig()
        self._runner = runner
        self._shadow: ModelRunner | None = None
        self._clock = clock
        self._wall = wall_clock
        self._seq = seq or (lambda: 0)
        self._loader = loader
        self._swap_lock = threading.Lock()
        self._swap_failed: str | None = None
        self.last_error: str | None = None
        self._shadow_lock = threading.Lock()  # judging threads may share one engine
        self._shadow_counts = ShadowStats(model=None)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None  # submit()'s, one per judge thread
        self._workers_size = 0

    # ---- state -------------------------------------------------------------------------------

    @property
    def runner(self) -> ModelRunner | None:
        """The model serving now (None when no model is loaded)."""
        return self._runner

    @property
    def model_ref(self) -> str | None:
        """``name@version`` of the served model, or None."""
        runner = self._runner
        return runner.ref if runner else None

    @property
    def healthy(self) -> bool:
        """A model is serving and the last swap did not fail."""
        return self._runner is not None and self._swap_failed is None

    def shadow_stats(self) -> ShadowStats:
        """The shadow model's counts since it was set (``model`` None: no shadow)."""
        with self._shadow_lock:
            return self._shadow_counts

    def _options(self) -> RunnerOptions:
        return RunnerOptions(
            intra_op_threads=self.config.intra_op_threads, max_batch=self.config.max_batch
        )

    def _thresholds(self, runner: ModelRunner, cfg: RuntimeConfig) -> dec.DecisionThresholds:
        if cfg.reject_threshold is not None and cfg.manual_threshold is not None:
            return dec.DecisionThresholds(cfg.reject_threshold, cfg.manual_threshold)
        thr = runner.manifest.thresholds
        return dec.DecisionThresholds(thr.reject, thr.manual)

    # ---- model swap, shadow, configuration --------------------------------------------------

    def swap_model(self, package: Path | str | ModelPackage) -> SwapReport:
        """Load ``package`` beside the served model, verify it, switch atomically; never raise.

        The package is always re-read from disk (a ``ModelPackage`` stands for its directory),
        so manifest, sha256, input shape and golden self-test are checked on every swap.
        """
        with self._swap_lock:
            try:
                source = package.root if isinstance(package, ModelPackage) else Path(package)
                new = self._loader(source, self._options())
            except ModelLoadError as exc:
                return self._swap_failure(f"model_swap_failed: {exc}")
            except Exception as exc:  # a loader bug must not take the served model down
                return self._swap_failure(f"model_swap_failed: {type(exc).__name__}: {exc}")
            old = self._runner
            self._runner = new  # the switch: one reference assignment
            self._swap_failed = None
            LOG.info("model swapped: %s -> %s", old.ref if old else None, new.ref)
            return SwapReport(True, new.ref)

    def _swap_failure(self, reason: str) -> SwapReport:
        self._swap_failed = reason
        self.last_error = reason
        LOG.error("%s (still serving %s)", reason, self.model_ref)
        return SwapReport(False, self.model_ref, reason)

    def set_shadow(self, package: Path | str | ModelPackage | None) -> SwapReport:
        """Start (or with None stop) a shadow model; its counts start again (a new epoch)."""
        with self._swap_lock:
            shadow: ModelRunner | None = None
            if package is not None:
                try:
                    source = package.root if isinstance(package, ModelPackage) else Path(package)
                    shadow = self._loader(source, self._options())
                except Exception as exc:
                    self.last_error = f"shadow_load_failed: {exc}"
                    return SwapReport(False, None, self.last_error)
            shadow_ref = shadow.ref if shadow is not None else None
            with self._shadow_lock:  # the model and its counts change together
                self._shadow = shadow
                self._shadow_counts = ShadowStats(
                    model=shadow_ref, epoch=self._shadow_counts.epoch + 1
                )
            return SwapReport(True, shadow_ref)

    def update_config(
        self, doc: dict[str, Any], *, base: RuntimeConfig | None = None
    ) -> ConfigReport:
        """Apply a configuration update; an invalid one is refused and the last good one stays.

        The update is merged onto ``base`` (default: the settings in force now).
        """
        try:
            new = RuntimeConfig.from_dict(doc, base=base or self.config)
        except ConfigError as exc:
            self.last_error = f"config_refused: {exc}"
            LOG.error("%s (keeping the last good configuration)", self.last_error)
            return ConfigReport(False, self.last_error)
        old, self.config = self.config, new
        runner = self._runner
        if runner is not None and (
            new.intra_op_threads != old.intra_op_threads or new.max_batch != old.max_batch
        ):
            report = self.swap_model(runner.package)  # a new session with the new settings
            if not report.ok:
                self.config = old
                return ConfigReport(False, f"config_refused: {report.reason}")
        return ConfigReport(True)

    # ---- judging -----------------------------------------------------------------------------

    def judge(self, frame: Frame) -> dict[str, Any]:
        """Judge one frame and return its result message v1 (never raises)."""
        return self.judge_batch([frame])[0]

    def judge_batch(
        self, frames: Sequence[Frame], maps: list[np.ndarray | None] | None = None
    ) -> list[dict[str, Any]]:
        """Judge frames queued together (e.g. from several cameras) with one model call.

        ``maps``, when given, is filled with one entry per frame: its reduced anomaly map
        (:func:`inspector.anomaly_map.reduce_map`) with ``keep_maps`` on and a package that has
        one, else None.
        """
        if maps is not None:
            maps[:] = [None] * len(frames)
        try:
            return self._judge_batch(frames, maps)
        except Exception as exc:  # the fail-safe of last resort: never lose a frame, never pass
            LOG.exception("internal error while judging %d frame(s)", len(frames))
            self.last_error = f"{dec.INTERNAL_ERROR}: {type(exc).__name__}: {exc}"
            runner = self._runner
            verdict = dec.fail_safe(dec.INTERNAL_ERROR, type(exc).__name__)
            out = []
            for frame in frames:
                try:
                    seq = int(self._seq())
                except Exception:
                    seq = 0
                out.append(
                    build_result(
                        self.identity,
                        camera=str(frame.camera),
                        part_id=str(frame.part_id),
                        seq=seq,
                        ts=self._wall(),
                        decision=verdict.decision,
                        score=None,
                        threshold=None,
                        model=runner.ref if runner else None,
                        latency_ms=0.0,
                        reason=verdict.reason,
                    )
                )
            return out

    def submit(
        self, frames: Sequence[Frame], maps: list[np.ndarray | None] | None = None
    ) -> Future[list[dict[str, Any]]]:
        """Judge ``frames`` (one unit) on the next free of ``judge_threads`` workers.

        The future's result is :meth:`judge_batch`'s for these frames (``maps`` is filled
        before it completes); it never holds an exception. Units submitted together run side
        by side, one per worker.
        """
        workers = self._executor("_workers", self.config.judge_threads, "judge-stream")
        return workers.submit(self.judge_batch, list(frames), maps)

    def _judge_batch(
        self, frames: Sequence[Frame], maps: list[np.ndarray | None] | None = None
    ) -> list[dict[str, Any]]:
        runner = self._runner  # read once: a swap during this batch does not mix models
        shadow = self._shadow
        config = self.config  # likewise for a configuration update
        thresholds = self._thresholds(runner, config) if runner is not None else None
        deadline_s = config.deadline_ms / 1000.0
        limits = config.decode_limits
        items = [_Pending(frame, frame.captured or self._clock()) for frame in frames]
        for item in items:
            item.verdict = self._precheck(item, runner, deadline_s)
        todo = [item for item in items if item.verdict is None]
        if todo and runner is not None and thresholds is not None:
            step = runner.options.max_batch if runner.batch_pays else 1
            units = [todo[i : i + step] for i in range(0, len(todo), step)]
            with_maps = maps is not None and self.keep_maps and runner.has_map
            self._in_lanes(
                units,
                lambda unit: self._judge_unit(unit, runner, thresholds, limits, with_maps),
                config,
            )
        results = []
        for item in items:
            verdict = item.verdict or dec.fail_safe(dec.INTERNAL_ERROR, "no verdict")
            elapsed = self._clock() - item.t0
            if elapsed > deadline_s and verdict.decision != dec.MANUAL:
                verdict = dec.fail_safe(
                    dec.DEADLINE_MISSED, f"{elapsed * 1000:.0f} ms", score=verdict.score
                )
            results.append(self._result(item.frame, item.t0, verdict, runner, thresholds, elapsed))
        if shadow is not None:
            self._run_shadow(shadow, runner, items, results)
        if maps is not None:
            maps[:] = [item.anomaly_map for item in items]
        return results

    def _judge_unit(
        self,
        unit: list[_Pending],
        runner: ModelRunner,
        thresholds: dec.DecisionThresholds,
        limits: DecodeLimits,
        with_maps: bool = False,
    ) -> None:
        """Decode, preprocess and score frames that are scored together; set their verdicts.

        A tiled frame's score combines its tiles' (:func:`~inspector.preprocess.combine_tiles`);
        a frame with a tile the model failed on is ``manual`` (``model_error``). With
        ``with_maps`` the tiles' maps are stitched and reduced into ``anomaly_map``.
        """
        for item in unit:
            try:
                frame = item.frame
                if frame.image is not None:
                    image = check_image(frame.image, limits)
                else:
                    image = decode_image(frame.data or b"", limits)
                item.image = image
                item.tensors = runner.frame_tensors(image)
            except FrameError as exc:
                item.verdict = dec.fail_safe(exc.reason, exc.detail)
            except Exception as exc:
                item.verdict = dec.fail_safe("preprocess_error", f"{type(exc).__name__}: {exc}")
        ready = [
            (item, item.tensors, item.image)
            for item in unit
            if item.verdict is None and item.tensors is not None and item.image is not None
        ]
        if not ready:
            return
        tile_maps: list[list[np.ndarray | None]] | None = [] if with_maps else None
        per_frame = self._score_tiles(runner, [tensors for _, tensors, _ in ready], tile_maps)
        spec = runner.manifest.input
        for index, ((item, _, image), scores) in enumerate(zip(ready, per_frame, strict=True)):
            failed = [s for s in scores if isinstance(s, str)]
            if failed:
                tiles = (
                    f"tile {scores.index(failed[0]) + 1}/{len(scores)}: " if len(scores) > 1 else ""
                )
                item.verdict = dec.fail_safe(dec.MODEL_ERROR, tiles + failed[0])
            else:
                values = [float(s) for s in scores]
                planes = tile_maps[index] if tile_maps is not None else None
                if planes is not None and any(p is None for p in planes):
                    planes = None
                score, amap = combine_tiles(values, planes, spec, image.size)  # type: ignore[arg-type]
                item.verdict = dec.decide(score, thresholds)
                if amap is not None:
                    try:
                        box = region(image.size, spec)
                        item.anomaly_map = reduce_map(frame_map(amap, box, image.size))
                    except ValueError as exc:  # a map is for a person: never the verdict's
                        LOG.debug("anomaly map of %s not kept: %s", item.frame.part_id, exc)

    def _score_tiles(
        self,
        runner: ModelRunner,
        frames: Sequence[np.ndarray],
        maps: list[list[np.ndarray | None]] | None = None,
    ) -> list[list[float | str]]:
        """Every frame's tile scores (or error texts): in batches when the model's batches pay,
        else tile by tile. ``maps``, when given, gets every frame's tile maps (None for a tile
        the model failed on)."""
        flat = [tile for tensors in frames for tile in tensors]
        tile_maps: list[np.ndarray | None] | None = [] if maps is not None else None
        if runner.batch_pays or len(flat) <= 1:
            scores = self._score(runner, flat, tile_maps)
        else:
            scores = [score for tile in flat for score in self._score(runner, [tile], tile_maps)]
        counts = [len(tensors) for tensors in frames]
        if maps is not None and tile_maps is not None:
            maps.extend(_split(tile_maps, counts))
        return _split(scores, counts)

    def _in_lanes(
        self,
        units: list[list[_Pending]],
        work: Callable[[list[_Pending]], None],
        cfg: RuntimeConfig,
    ) -> None:
        """Run ``work`` on every unit with up to ``cfg.judge_threads`` threads (this one too)."""
        lanes = min(cfg.judge_threads, len(units))
        if lanes <= 1:
            for unit in units:
                work(unit)
            return
        pending: Iterator[list[_Pending]] = iter(units)
        take = threading.Lock()

        def lane() -> None:
            while True:
                with take:
                    unit = next(pending, None)
                if unit is None:
                    return
                work(unit)

        pool = self._lane_pool(cfg.judge_threads - 1)
        helpers = []
        for _ in range(lanes - 1):
            try:
                helpers.append(pool.submit(lane))
            except RuntimeError:  # a configuration update replaced the pool: judge here
                break
        try:
            lane()
        finally:
            for helper in helpers:
                helper.result()  # a lane's exception reaches judge_batch's fail-safe

    def _lane_pool(self, size: int) -> ThreadPoolExecutor:
        return self._executor("_pool", size, "judge")

    def _executor(self, attr: str, size: int, prefix: str) -> ThreadPoolExecutor:
        """The executor kept in ``attr`` with ``size`` threads, replaced when the size changed
        (a configuration update); the old one finishes what it already holds."""
        with self._pool_lock:
            current: ThreadPoolExecutor | None = getattr(self, attr)
            if current is None or getattr(self, f"{attr}_size") != size:
                setattr(self, attr, ThreadPoolExecutor(size, thread_name_prefix=prefix))
                setattr(self, f"{attr}_size", size)
                if current is not None:
                    current.shutdown(wait=False)
            executor: ThreadPoolExecutor = getattr(self, attr)
            return executor

    def close(self) -> None:
        """Stop the judging threads (they start again if another batch comes)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            workers, self._workers = self._workers, None
        for executor in (workers, pool):
            if executor is not None:
                executor.shutdown(wait=True)

    def _precheck(
        self, item: _Pending, runner: ModelRunner | None, deadline_s: float
    ) -> dec.Verdict | None:
        frame = item.frame
        if frame.error:
            code, _, detail = frame.error.partition(": ")
            return dec.fail_safe(code or UNREADABLE, detail)
        if runner is None:
            return dec.fail_safe(dec.NO_MODEL, "no model package loaded")
        waited = self._clock() - item.t0
        if waited > deadline_s:
            return dec.fail_safe(dec.DEADLINE_MISSED, f"queued {waited * 1000:.0f} ms")
        return None

    def _score(
        self,
        runner: ModelRunner,
        tensors: list[np.ndarray],
        maps: list[np.ndarray | None] | None = None,
    ) -> list[float | str]:
        """Scores, or an error text per frame; a failed batch is retried frame by frame.

        ``maps``, when given, is extended with one anomaly map per tensor (None where failed).
        """
        if maps is not None:
            return self._score_maps(runner, tensors, maps)
        try:
            return list(runner.score(tensors))
        except InferenceError as exc:
            self.last_error = f"{dec.MODEL_ERROR}: {exc}"
            if len(tensors) == 1:
                return [str(exc)]
        except Exception as exc:
            self.last_error = f"{dec.MODEL_ERROR}: {type(exc).__name__}: {exc}"
            if len(tensors) == 1:
                return [self.last_error]
        out: list[float | str] = []
        for tensor in tensors:  # isolate the frame that breaks the model from its batch mates
            try:
                out.append(runner.score([tensor])[0])
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    def _score_maps(
        self, runner: ModelRunner, tensors: list[np.ndarray], maps: list[np.ndarray | None]
    ) -> list[float | str]:
        """:meth:`_score` with the maps: the same fallbacks, frame by frame on a failed batch."""
        try:
            scores, planes = runner.score_maps(tensors)
            maps.extend(planes)
            return list(scores)
        except InferenceError as exc:
            self.last_error = f"{dec.MODEL_ERROR}: {exc}"
            if len(tensors) == 1:
                maps.append(None)
                return [str(exc)]
        except Exception as exc:
            self.last_error = f"{dec.MODEL_ERROR}: {type(exc).__name__}: {exc}"
            if len(tensors) == 1:
                maps.append(None)
                return [self.last_error]
        out: list[float | str] = []
        for tensor in tensors:  # isolate the frame that breaks the model from its batch mates
            try:
                (score,), (plane,) = runner.score_maps([tensor])
                out.append(score)
                maps.append(plane)
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
                maps.append(None)
        return out

    def _run_shadow(
        self,
        shadow: ModelRunner,
        runner: ModelRunner | None,
        items: list[_Pending],
        results: list[dict[str, Any]],
    ) -> None:
        scored = [
            (item, result)
            for item, result in zip(items, results, strict=True)
            if item.image is not None and result["score"] is not None
        ]
        if not scored:
            return
        thr = shadow.manifest.thresholds
        thresholds = dec.DecisionThresholds(thr.reject, thr.manual)
        same_input = (
            runner is not None
            and runner.manifest.input == shadow.manifest.input
            and runner.manifest.frames == shadow.manifest.frames
        )
        spec = shadow.manifest.input
        try:
            per_frame = [
                item.tensors
                if same_input and item.tensors is not None
                else shadow.frame_tensors(image)
                for item, _ in scored
                if (image := item.image) is not None
            ]
            tile_scores = _split(
                shadow.score([tile for tensors in per_frame for tile in tensors]),
                [len(tensors) for tensors in per_frame],
            )
            scores = [
                combine_tiles(values, None, spec, image.size)[0]
                for (item, _), values in zip(scored, tile_scores, strict=True)
                if (image := item.image) is not None
            ]
        except Exception as exc:
            LOG.warning("shadow model %s failed: %s", shadow.ref, exc)
            self._count_shadow(shadow, ShadowStats(shadow.ref, errors=len(scored)))
            return
        frames = agreed = errors = both = served_only = shadow_only = 0
        for (_, result), score in zip(scored, scores, strict=True):
            verdict = dec.decide(score, thresholds)
            if verdict.reason == dec.SCORE_INVALID:  # not judged by the shadow: no agreement
                errors += 1
                continue
            frames += 1
            agreed += verdict.decision == result["decision"]
            served_reject = result["decision"] == dec.REJECT
            shadow_reject = verdict.decision == dec.REJECT
            both += served_reject and shadow_reject
            served_only += served_reject and not shadow_reject
            shadow_only += shadow_reject and not served_reject
        self._count_shadow(
            shadow,
            ShadowStats(shadow.ref, frames, agreed, errors, both, served_only, shadow_only),
        )

    def _count_shadow(self, shadow: ModelRunner, counts: ShadowStats) -> None:
        with self._shadow_lock:
            if self._shadow is shadow:  # not replaced while this batch was scored
                self._shadow_counts = self._shadow_counts.plus(counts)

    def _result(
        self,
        frame: Frame,
        t0: float,
        verdict: dec.Verdict,
        runner: ModelRunner | None,
        thresholds: dec.DecisionThresholds | None,
        elapsed: float | None,
    ) -> dict[str, Any]:
        if elapsed is None:
            elapsed = self._clock() - t0
        return build_result(
            self.identity,
            camera=frame.camera,
            part_id=frame.part_id,
            seq=self._seq(),
            ts=frame.wall or self._wall(),
            decision=verdict.decision,
            score=verdict.score,
            threshold=thresholds.reject if thresholds else None,
            model=runner.ref if runner else None,
            latency_ms=elapsed * 1000.0,
            reason=verdict.reason,
        )


def _split(values: Sequence[Any], counts: Sequence[int]) -> list[list[Any]]:
    """``values`` cut into consecutive runs of ``counts`` (one run per frame)."""
    out, start = [], 0
    for count in counts:
        out.append(list(values[start : start + count]))
        start += count
    return out
