"""A component's lifecycle as the nucleus runs it: install / startup / run / shutdown, states,
errors, BROKEN, and stopping processes.

Sources (nucleus HEAD a28341c, ``src/main/java/com/aws/greengrass/``):
``lifecyclemanager/Lifecycle.java`` (LC: states, timeouts, error counting),
``lifecyclemanager/GenericExternalService.java`` (GES: what each step does),
``lifecyclemanager/ShellRunner.java`` (environment, cwd), ``util/Exec.java`` and
``util/platforms/unix/UnixExec.java`` / ``UnixPlatform.java`` (``sh -c``, SIGTERM then SIGKILL),
and the guide page ``component-recipe-reference.md`` (step defaults).

Modelled: the states and transitions below, Timeout, Setenv, Skipif, errorResetTime.
Ignored: ``RequiresPrivilege`` and ``runWith`` (every step runs as the current user),
``bootstrap``, ``recover`` and system resource limits.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from core_device.recipes import _get

# LC:74-82
DEFAULT_INSTALL_TIMEOUT_S = 120.0
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 15.0
MAXIMUM_CONTINUAL_ERROR = 3
DEFAULT_ERROR_RESET_TIME_S = 3600.0
# Exec.java:94 — how long close() waits after SIGTERM before SIGKILL
DEFAULT_GRACEFUL_SHUTDOWN_S = 5.0
# GES:63 — Skipif syntax
_SKIPIF = re.compile(r"(exists|onpath) +(.+)")
# UnixExec static block — the nucleus makes sure these are on PATH
_ENSURED_PATH = ("/bin", "/usr/bin", "/sbin", "/usr/sbin")


class State(enum.Enum):
    """A component's state (``com.aws.greengrass.dependency.State``)."""

    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    ERRORED = "ERRORED"
    BROKEN = "BROKEN"
    FINISHED = "FINISHED"


# LC:131-132 — errors count only while in these states
_STATES_TO_ERRORED = (State.NEW, State.STARTING, State.RUNNING)


class LifecycleError(Exception):
    """A lifecycle definition cannot be run (names the component and the step)."""


Clock = Callable[[], float]
StateListener = Callable[[str, State, State], None]


@dataclass(frozen=True)
class Step:
    """One lifecycle step, as the nucleus reads it (GES:761-880)."""

    name: str
    script: str
    timeout_s: float | None = None
    skipif: str | None = None
    setenv: Mapping[str, str] = field(default_factory=dict)


def _without_shutdown(lifecycle: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in lifecycle.items() if str(k).lower() != "shutdown"}


def _steps(component: str, lifecycle: Mapping[str, Any]) -> dict[str, Step]:
    steps = {}
    for name in ("install", "startup", "run", "shutdown"):
        node = _get(lifecycle, name)
        if node is None:
            continue
        if isinstance(node, str | int | float):
            steps[name] = Step(name, str(node))
            continue
        if not isinstance(node, Mapping):
            raise LifecycleError(f"{component}: lifecycle.{name} must be a script or a mapping")
        script = _get(node, "script")
        if script is None:
            # GES:866-869 — "Missing script" makes the step error
            raise LifecycleError(f"{component}: lifecycle.{name}.Script missing")
        timeout = _get(node, "timeout")
        setenv = _get(node, "setenv") or {}
        if not isinstance(setenv, Mapping):
            raise LifecycleError(f"{component}: lifecycle.{name}.Setenv must be a mapping")
        skipif = _get(node, "skipif")
        steps[name] = Step(
            name,
            str(script),
            None if timeout is None else float(timeout),
            None if skipif is None else str(skipif),
            {str(k): str(v) for k, v in setenv.items()},
        )
    return steps


def component_environment(
    *,
    svcuid: str,
    thing_name: str,
    region: str,
    socket_path: Path | str,
    root_ca_path: Path | str | None = None,
    credentials_uri: str | None = None,
) -> dict[str, str]:
    """The variables the nucleus gives every lifecycle script."""
    env = {
        # ShellRunner.java:63-69 — the component's IPC token, the same token for TES, the CA
        "SVCUID": svcuid,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": svcuid,
        "GG_ROOT_CA_PATH": "" if root_ca_path is None else str(root_ca_path),
        # DeviceConfiguration.java:367-369 and :436 — root-level setenv
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_IOT_THING_NAME": thing_name,
        # IPCEventStreamService.java:103-107 — root-level setenv
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH": str(socket_path),
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(socket_path),
    }
    if credentials_uri is not None:
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = credentials_uri  # TokenExchangeService:36
    return env


def _which(program: str, path: str) -> str | None:
    """``UnixExec.which``: an absolute path if executable, else a search of PATH."""
    program = os.path.expanduser(program)
    if program.startswith("/"):
        return program if os.access(program, os.X_OK) and os.path.isfile(program) else None
    return shutil.which(program, path=path)


class _Process:
    """One lifecycle script: ``sh -c`` in its own process group, output copied to the log."""

    def __init__(self, owner: Component, step: Step, env: Mapping[str, str]) -> None:
        self.step = step
        self.owner = owner
        # UnixPlatform.java:732-733 — the default shell decorator is `sh -c`
        self.popen = subprocess.Popen(
            ["sh", "-c", step.script],
            cwd=owner.work_dir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a process group to signal as a whole
        )
        self.returncode: int | None = None
        self._copiers = [
            threading.Thread(
                target=self._copy, args=(self.popen.stdout, "INFO", "stdout"), daemon=True
            ),
            threading.Thread(
                target=self._copy, args=(self.popen.stderr, "WARN", "stderr"), daemon=True
            ),
        ]
        for thread in self._copiers:
            thread.start()
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _copy(self, stream: IO[bytes] | None, level: str, kind: str) -> None:
        if stream is None:
            return
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                # the shape of the nucleus' per-component log lines (ShellRunner.java:58-64)
                self.owner.log(
                    level,
                    f"{kind}. {line}. {{scriptName=services.{self.owner.name}.lifecycle."
                    f"{self.step.name}.script, serviceName={self.owner.name}}}",
                )

    def _wait(self) -> None:
        code = self.popen.wait()
        for thread in self._copiers:
            thread.join(timeout=1.0)
        with self.owner._cond:
            self.returncode = code
            self.owner._cond.notify_all()

    @property
    def running(self) -> bool:
        return self.returncode is None

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def close(self, grace_s: float) -> None:
        """``UnixExec.close`` (UnixExec.java:96-150): SIGTERM to the process and its children,
        wait, then SIGKILL whatever is left (UnixPlatform.java:288-345)."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace_s)
        # children that outlived the script (or ignored SIGTERM) die with the group
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)


class Component:
    """One component's lifecycle, run on its own thread like the nucleus' lifecycle thread."""

    def __init__(
        self,
        name: str,
        lifecycle: Mapping[str, Any],
        *,
        work_dir: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        version: str = "",
        clock: Clock = time.monotonic,
        graceful_shutdown_s: float = DEFAULT_GRACEFUL_SHUTDOWN_S,
        dependencies_ready: Callable[[], bool] | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.work_dir = work_dir
        self.log_path = log_path
        self._steps = _steps(name, lifecycle)
        self._raw = dict(lifecycle)
        self._raw_install = _get(lifecycle, "install")
        reset = _get(lifecycle, "errorResetTime")  # LC:1022-1025
        self.error_reset_time_s = DEFAULT_ERROR_RESET_TIME_S if reset is None else float(reset)
        lifecycle_env = _get(lifecycle, "setenv") or {}
        self._nucleus_env = dict(env or {})
        self._env = self._base_env(self._nucleus_env, lifecycle_env)
        self._clock = clock
        self._grace = graceful_shutdown_s
        self._dependencies_ready = dependencies_ready or (lambda: True)
        self._listeners: list[StateListener] = [] if on_state is None else [on_state]
        self._cond = threading.Condition(threading.RLock())
        self._log_lock = threading.Lock()
        self._state = State.NEW
        self._previous = State.NEW
        self._desired = State.RUNNING
        self._then = State.RUNNING  # the desired state after a pending NEW (a reinstall)
        self._shutdown_step: Step | None = None  # cached at each start (GES:366-376, 415-426)
        self._reported: State | None = None
        self._errors: dict[State, list[float]] = {}
        self._processes: list[_Process] = []
        self._current: dict[str, _Process] = {}  # the latest process of each step
        self._closing = False
        self._thread: threading.Thread | None = None
        self.state_changed_at = clock()
        self.history: list[State] = [State.NEW]

    # ---------------------------------------------------------------- public interface

    @property
    def state(self) -> State:
        """The current state."""
        with self._cond:
            return self._state

    @property
    def reached_desired_state(self) -> bool:
        """No state change is still asked of it (Lifecycle.reachedDesiredState)."""
        with self._cond:
            return self._state == self._desired

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(name, old, new)`` on every state change (from the lifecycle thread)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the lifecycle thread (the component goes NEW → install → ...)."""
        with self._cond:
            if self._thread is not None:
                self._desired = State.RUNNING if self._state != State.BROKEN else self._desired
                self._cond.notify_all()
                return
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(
                target=self._main, name=f"lifecycle-{self.name}", daemon=True
            )
            self._thread.start()

    def request_restart(self) -> None:
        """Stop and start again without reinstalling (Lifecycle.requestRestart, LC:953-977).

        Desired INSTALLED, then RUNNING, from whatever state it is in (a FINISHED or STOPPING
        component is started again too); not while a reinstall is pending (``don't override in
        the case of re-install``) and not before a NEW component first installed.
        """
        with self._cond:
            if self._desired == State.NEW:
                self._then = State.RUNNING  # NEW stays first; RUNNING after it (LC:970-973)
                return
            if self._state == State.NEW:
                return
            self._desired = State.INSTALLED
            self._cond.notify_all()

    def _request_stop(self) -> None:
        """Lifecycle.requestStop (LC:984-991): FINISHED, except that a pending reinstall is
        kept and FINISHED follows it (desired states NEW, FINISHED)."""
        with self._cond:
            if self._desired == State.NEW:
                self._then = State.FINISHED
            else:
                self._desired = State.FINISHED
            self._cond.notify_all()

    def update(self, lifecycle: Mapping[str, Any], *, version: str) -> bool:
        """A deployment changed this component's version or lifecycle (GES:118-157).

        The same service takes the new steps. A new version or a changed ``install`` step
        means a reinstall (GES:134-140); any other lifecycle or Setenv change a restart
        without install (GES:143-156), except that a BROKEN component is reinstalled, since a
        restart cannot leave BROKEN. The counts of errors are kept (the service object stays:
        LC:224-251). Returns whether it reinstalls.
        """
        with self._cond:
            reinstall = (
                version != self.version
                or _get(lifecycle, "install") != self._raw_install
                or self._state == State.BROKEN
            )
            # GES:126-128: a change under lifecycle.shutdown alone neither restarts nor
            # reinstalls; the new shutdown step is simply the one used at the next stop
            restart = reinstall or _without_shutdown(lifecycle) != _without_shutdown(self._raw)
            self._steps = _steps(self.name, lifecycle)
            self._raw = dict(lifecycle)
            self._raw_install = _get(lifecycle, "install")
            reset = _get(lifecycle, "errorResetTime")
            self.error_reset_time_s = DEFAULT_ERROR_RESET_TIME_S if reset is None else float(reset)
            self._env = self._base_env(self._nucleus_env, _get(lifecycle, "setenv") or {})
            self.version = version
        if reinstall:
            self.request_reinstall()
        elif restart:
            self.request_restart()
        return reinstall

    def request_reinstall(self) -> None:
        """Stop, reinstall and start; the way out of BROKEN (LC:498-506)."""
        with self._cond:
            self._desired = State.NEW
            self._cond.notify_all()

    def report_state(self, state: State | str) -> None:
        """The IPC UpdateState entry point: RUNNING or ERRORED, reported by the component."""
        state = State(state) if isinstance(state, str) else state
        if state not in (State.RUNNING, State.ERRORED):
            raise ValueError(
                f"{self.name}: UpdateState accepts RUNNING or ERRORED, not {state.value}"
            )
        with self._cond:
            self._reported = state
            self._cond.notify_all()

    def wait_for(self, states: Iterable[State], timeout_s: float) -> State:
        """Wait until the component is in one of ``states``; return the state it is in then."""
        wanted = set(states)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._state not in wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._state

    def stop(self, timeout_s: float = 30.0) -> State:
        """Stop (shutdown step, then SIGTERM/SIGKILL); wait for FINISHED or BROKEN."""
        with self._cond:
            self._desired = State.FINISHED
            self._cond.notify_all()
            if self._thread is None:
                self._set(State.FINISHED)
                return self._state
        return self.wait_for((State.FINISHED, State.BROKEN), timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop, end the lifecycle thread and make sure no process of this component is left."""
        try:
            self.stop(timeout_s)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join(timeout_s)
            self._stop_processes()

    def log(self, level: str, message: str) -> None:
        """Append a line to the component's log file (``logs/<name>.log``)."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as out:
            out.write(f"{stamp} [{level}] {self.name}: {message}\n")

    # ------------------------------------------------------------------ state machine

    def _base_env(self, nucleus_env: Mapping[str, str], lifecycle_env: Any) -> dict[str, str]:
        env = dict(os.environ)  # ProcessBuilder starts from the nucleus' own environment
        parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
        env["PATH"] = os.pathsep.join(parts + [p for p in _ENSURED_PATH if p not in parts])
        env.update(nucleus_env)
        if isinstance(lifecycle_env, Mapping):
            # GES:913-923 — parents' Setenv first: root, then Lifecycle.Setenv, then the step's
            env.update({str(k): str(v) for k, v in lifecycle_env.items()})
        return env

    def _set(self, new: State) -> None:
        """Report a state the way ``Lifecycle.internalReportState`` does (LC:215-256)."""
        with self._cond:
            current = self._state
            if new == current:
                return
            if new == State.ERRORED and current in _STATES_TO_ERRORED:
                times = self._errors.setdefault(current, [])
                now = self._clock()
                # LC:234-237 — the count restarts when errorResetTime passed since the last error
                if times and now - times[-1] >= self.error_reset_time_s:
                    times.clear()
                times.append(now)
            else:
                # LC:241-245 — any other report resets the count of the current state
                self._errors.pop(current, None)
            if len(self._errors.get(current, [])) >= MAXIMUM_CONTINUAL_ERROR:
                new = State.BROKEN  # LC:248-251
            self._previous, self._state = current, new
            if new == State.NEW and self._desired == State.NEW:
                # LC:365-369: reaching the head of the desired states (NEW, then) drops it
                self._desired, self._then = self._then, State.RUNNING
            self.state_changed_at = self._clock()
            self.history.append(new)
            self._cond.notify_all()
        self.log(
            "INFO", f"service-set-state. {{currentState={current.value}, newState={new.value}}}"
        )
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                listener(self.name, current, new)

    def _main(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closing:
                        return
                    state, desired = self._state, self._desired
                if state == State.NEW:
                    # LC:519-555: NEW installs whatever state is desired next (FINISHED too:
                    # a reinstall followed by a stop installs, then finishes from INSTALLED)
                    self._install()
                elif state == State.INSTALLED:
                    self._installed(desired)
                elif state == State.STARTING:
                    self._starting()
                elif state == State.RUNNING:
                    self._running()
                elif state == State.STOPPING:
                    self._stopping()
                elif state == State.ERRORED:
                    self._errored()
                elif state in (State.BROKEN, State.FINISHED):
                    self._idle(state)
        except Exception as exc:  # the lifecycle thread must never die silently
            self.log("ERROR", f"lifecycle thread failed: {exc!r}")
            self._set(State.ERRORED)
        finally:
            self._stop_processes()

    def _should_skip(self, step: Step) -> bool:
        """GES:878-906 — ``[!](exists|onpath) <arg>``; anything else is an invalid config."""
        if step.skipif is None:
            return False
        expr = step.skipif.strip()
        negate = expr.startswith("!")
        if negate:
            expr = expr[1:].strip()
        match = _SKIPIF.fullmatch(expr)
        if match is None:
            raise LifecycleError(f"{self.name}: lifecycle.{step.name}.Skipif {step.skipif!r}")
        if match.group(1) == "onpath":
            found = _which(match.group(2), self._env.get("PATH", "")) is not None
        else:
            found = Path(os.path.expanduser(match.group(2))).exists()
        return found != negate

    def _launch(self, name: str, step: Step | None = None) -> _Process | None:
        """Start a step: None when it is absent or skipped; raises LifecycleError on bad input."""
        step = step if step is not None else self._steps.get(name)
        if step is None or not step.script.strip():
            return None
        if self._should_skip(step):
            self.log("INFO", f"generic-service-skipped. {{script=lifecycle.{name}}}")
            return None
        env = dict(self._env)
        env.update(step.setenv)
        self.log(
            "INFO", f"shell-runner-start. {{scriptName=lifecycle.{name}, command={step.script!r}}}"
        )
        process = _Process(self, step, env)
        with self._cond:
            self._processes.append(process)
            self._current[name] = process
        return process

    def _launch_or_error(self, name: str, step: Step | None = None) -> tuple[bool, _Process | None]:
        try:
            return True, self._launch(name, step)
        except (LifecycleError, OSError) as exc:
            self.log("ERROR", f"{exc}")
            return False, None

    def _timeout(self, name: str, default: float | None) -> float | None:
        step = self._steps.get(name)
        return step.timeout_s if step is not None and step.timeout_s is not None else default

    def _wait(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        """Wait (holding the condition) until ``predicate`` or the deadline; True if it held."""
        with self._cond:
            while not predicate():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
            return True

    def _install(self) -> None:
        """LC:520-556, GES:345-360 — install at every start from NEW, with its timeout."""
        ok, process = self._launch_or_error("install")
        if not ok:
            self._set(State.ERRORED)
            return
        if process is None:
            self._set(State.INSTALLED)
            return
        timeout = self._timeout("install", DEFAULT_INSTALL_TIMEOUT_S)
        deadline = None if timeout is None else time.monotonic() + timeout
        # LC:540-554: the lifecycle thread waits for install (up to its timeout) whatever is
        # desired meanwhile; only closing the service cuts it short
        finished = self._wait(lambda: not process.running or self._closing, deadline)
        if process.running:
            process.close(self._grace)
            if not finished:
                self.log("ERROR", "Timeout in install")
                self._set(State.ERRORED)
            else:
                self._set(State.FINISHED)
            return
        self._set(State.INSTALLED if process.returncode == 0 else State.ERRORED)

    def _installed(self, desired: State) -> None:
        if desired == State.FINISHED:
            self._set(State.FINISHED)
        elif desired == State.NEW:
            self._set(State.NEW)
        else:
            if desired == State.INSTALLED:
                with self._cond:
                    self._desired = State.RUNNING  # a restart: INSTALLED was the way through
            # LC:579-584 — wait for the dependencies before STARTING
            ready = self._wait(
                lambda: (
                    self._closing or self._desired != State.RUNNING or self._dependencies_ready()
                ),
                None,
            )
            with self._cond:
                go = ready and not self._closing and self._desired == State.RUNNING
            if go:
                self._set(State.STARTING)

    def _starting(self) -> None:
        """GES:366-410 (startup) and GES:503-560 (run); LC:602-642 (startup timeout)."""
        with self._cond:
            self._reported = None
            self._current.clear()
            # the shutdown that stops *this* start is the one configured now, even if an
            # update changes it before the stop (GES:366-376 cacheShutdownExec, GES:580-587)
            self._shutdown_step = self._steps.get("shutdown")
        timeout = self._timeout("startup", DEFAULT_STARTUP_TIMEOUT_S)
        deadline = None if timeout is None else time.monotonic() + timeout
        ok, startup = self._launch_or_error("startup")
        if not ok:
            self._set(State.ERRORED)
            return
        if startup is None:
            ok, run = self._launch_or_error("run")
            if not ok:
                self._set(State.ERRORED)
            elif run is None:
                self._set(State.FINISHED)  # GES:528-531 — nothing to run
                self._request_stop()
            else:
                self._set(State.RUNNING)  # GES:535-536 — RUNNING as soon as run starts
            return

        def settled() -> bool:
            return (
                self._closing
                or self._desired != State.RUNNING
                or self._reported is not None
                or not startup.running
            )

        in_time = self._wait(settled, deadline)
        with self._cond:
            reported, code, desired = self._reported, startup.returncode, self._desired
            self._reported = None
        if self._closing or desired != State.RUNNING:
            self._set(State.STOPPING)
        elif reported is not None:
            # UpdateState while starting: RUNNING keeps the startup process running
            self._set(reported)
        elif code is not None:
            self._set(State.RUNNING if code == 0 else State.ERRORED)  # GES:388-393
        elif not in_time:
            self.log("ERROR", "startup timeout")  # LC:608-612
            self._set(State.ERRORED)

    def _running(self) -> None:
        with self._cond:
            run, startup = self._current.get("run"), self._current.get("startup")
        timeout = self._timeout("run", None)  # guide: run has no timeout unless set
        deadline = None
        if run is not None and timeout is not None:
            deadline = time.monotonic() + timeout

        def event() -> bool:
            return (
                self._closing
                or self._desired != State.RUNNING
                or self._reported == State.ERRORED
                or (run is not None and not run.running)
                or (startup is not None and startup.returncode not in (None, 0))
            )

        in_time = self._wait(event, deadline)
        with self._cond:
            reported, desired = self._reported, self._desired
            self._reported = None
        if self._closing or desired != State.RUNNING:
            self._set(State.STOPPING)
        elif reported == State.ERRORED:
            self._set(State.ERRORED)
        elif run is not None and run.returncode is not None:
            if run.returncode == 0:
                self._request_stop()  # GES:513-517
                self._set(State.STOPPING)
            else:
                self._set(State.ERRORED)
        elif startup is not None and startup.returncode not in (None, 0):
            self._set(State.ERRORED)  # GES:391-392 — startup exiting non-zero while RUNNING
        elif not in_time:
            self.log("WARN", "Service failed to run within timeout, calling close in process")
            self._set(State.ERRORED)  # GES:545-553

    def _shutdown(self) -> None:
        """GES:562-596 — the shutdown step (within its timeout), then every process is closed."""
        with self._cond:
            cached, self._shutdown_step = self._shutdown_step, None
        step = cached if cached is not None else self._steps.get("shutdown")
        timeout = step.timeout_s if step is not None and step.timeout_s is not None else None
        timeout = DEFAULT_SHUTDOWN_TIMEOUT_S if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        _ok, shutdown = self._launch_or_error("shutdown", step)
        if shutdown is not None and not self._wait(lambda: not shutdown.running, deadline):
            self.log("ERROR", "Timeout in shutdown")  # LC:681-685
        self._stop_processes()

    def _stopping(self) -> None:
        """LC:660-690 — shut down, then move to the desired state."""
        self._shutdown()
        with self._cond:
            desired = self._desired
            if desired == State.INSTALLED:
                # a restart (INSTALLED, RUNNING) reached its first desired state; RUNNING is
                # next (a reinstall's NEW is dropped on entering NEW, in _set)
                self._desired = State.RUNNING
        # LC:770-800 serviceTerminatedMoveToDesiredState
        if self._closing or desired == State.FINISHED:
            self._set(State.FINISHED)
        elif desired == State.NEW:
            self._set(State.NEW)
        else:
            self._set(State.INSTALLED)

    def _errored(self) -> None:
        """LC:731-768 — retry: stop first after STARTING/RUNNING, reinstall after NEW."""
        with self._cond:
            previous = self._previous
            if self._desired not in (State.FINISHED, State.NEW):
                self._desired = State.RUNNING  # LC:740-743 requestStart
        if previous in (State.STARTING, State.RUNNING):
            self._set(State.STOPPING)
        elif previous == State.NEW:
            with self._cond:
                finished = self._desired == State.FINISHED
            self._set(State.FINISHED if finished else State.NEW)
        else:
            self._set(State.FINISHED)

    def _idle(self, state: State) -> None:
        """BROKEN waits for a reinstall (LC:462-516); FINISHED for a new start (LC:702-708)."""
        if state == State.BROKEN:
            with self._cond:
                previous = self._previous
            if previous in (State.STARTING, State.RUNNING, State.ERRORED):
                self._shutdown()  # LC:463-489
            else:
                self._stop_processes()
            self._wait(lambda: self._closing or self._desired == State.NEW, None)
        else:
            self._wait(
                lambda: (
                    self._closing or self._desired in (State.RUNNING, State.NEW, State.INSTALLED)
                ),
                None,
            )
        with self._cond:
            if self._closing:
                return
            desired = self._desired
            if desired == State.NEW:
                self._errors.clear()  # LC:504-506
                self._desired = State.RUNNING
        self._set(State.NEW if desired == State.NEW else State.INSTALLED)

    def _stop_processes(self) -> None:
        with self._cond:
            processes, self._processes = list(self._processes), []
        for process in processes:
            process.close(self._grace)


class LifecycleManager:
    """Runs several components concurrently and stops them all, whatever happens."""

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}
        self._lock = threading.Lock()

    def add(self, component: Component) -> Component:
        """Track a component (replacing one of the same name is the caller's business)."""
        with self._lock:
            self._components[component.name] = component
        return component

    def remove(self, name: str) -> Component | None:
        """Stop tracking a component (it is not stopped)."""
        with self._lock:
            return self._components.pop(name, None)

    def get(self, name: str) -> Component | None:
        """The component of that name, if tracked."""
        with self._lock:
            return self._components.get(name)

    @property
    def components(self) -> dict[str, Component]:
        """A snapshot of the tracked components."""
        with self._lock:
            return dict(self._components)

    def close_all(self, timeout_s: float = 30.0) -> None:
        """Stop every component in parallel and leave no process behind."""
        threads = [
            threading.Thread(target=c.close, args=(timeout_s,), daemon=True)
            for c in self.components.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout_s + 10)

    def __enter__(self) -> LifecycleManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()
