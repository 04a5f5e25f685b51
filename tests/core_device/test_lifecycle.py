"""Lifecycle: small shell scripts through install / startup / run / shutdown, as the nucleus runs them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core_device.lifecycle import (
    Component,
    LifecycleManager,
    State,
    component_environment,
)

WAIT = 10.0


def alive(pid: int) -> bool:
    """A live process (a zombie nobody reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def manager() -> Iterator[LifecycleManager]:
    with LifecycleManager() as running:
        yield running


@pytest.fixture
def make(manager: LifecycleManager, tmp_path: Path) -> Callable[..., Component]:
    def build(name: str, lifecycle: dict[str, Any], **kwargs: Any) -> Component:
        kwargs.setdefault("graceful_shutdown_s", 0.5)
        kwargs.setdefault(
            "env",
            component_environment(
                svcuid=f"token-{name}",
                thing_name="thing-1",
                region="eu-west-1",
                socket_path=tmp_path / "ipc.socket",
                root_ca_path=tmp_path / "AmazonRootCA1.pem",
            ),
        )
        component = Component(
            name,
            lifecycle,
            work_dir=tmp_path / "work" / name,
            log_path=tmp_path / "logs" / f"{name}.log",
            **kwargs,
        )
        return manager.add(component)

    return build


def test_run_is_running_once_started_then_finished(
    make: Callable[..., Component], tmp_path: Path
) -> None:
    c = make(
        "A",
        {
            "Setenv": {"WHO": "lifecycle", "BOTH": "lifecycle"},
            "run": {
                "Script": 'sleep 0.3; echo "$SVCUID $AWS_IOT_THING_NAME $AWS_REGION $WHO $BOTH $PWD";'
                ' echo "$AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT" >&2',
                "Setenv": {"BOTH": "step"},
            },
        },
    )
    c.start()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    assert c.wait_for([State.FINISHED], WAIT) == State.FINISHED
    assert c.history == [
        State.NEW,
        State.INSTALLED,
        State.STARTING,
        State.RUNNING,
        State.STOPPING,
        State.FINISHED,
    ]
    log = (tmp_path / "logs" / "A.log").read_text()
    assert f"[INFO] A: stdout. token-A thing-1 eu-west-1 lifecycle step {tmp_path}/work/A." in log
    assert f"[WARN] A: stderr. {tmp_path}/ipc.socket." in log


def test_install_runs_at_every_start_but_not_at_a_restart_after_an_error(
    make: Callable[..., Component], tmp_path: Path
) -> None:
    lifecycle = {
        "install": "echo x >> installs",
        # fails the first time, then stays up
        "run": "if [ ! -e ran ]; then touch ran; exit 3; fi; sleep 30",
    }
    first = make("A", lifecycle)
    first.start()
    assert wait_until(lambda: first.history.count(State.RUNNING) == 2)
    assert first.state == State.RUNNING
    assert State.ERRORED in first.history
    assert (tmp_path / "work/A/installs").read_text() == "x\n"  # no reinstall on restart
    first.close()
    second = make("A", lifecycle)  # the next nucleus start
    second.start()
    assert second.wait_for([State.RUNNING], WAIT) == State.RUNNING
    assert (tmp_path / "work/A/installs").read_text() == "x\nx\n"


def test_three_errors_within_the_window_break_the_component(make: Callable[..., Component]) -> None:
    ticks = itertools.count(step=1.0)  # one second between state changes: well within 1 h
    c = make("A", {"run": "exit 1"}, clock=lambda: next(ticks))
    c.start()
    assert c.wait_for([State.BROKEN], WAIT) == State.BROKEN
    assert c.history.count(State.ERRORED) == 2
    assert c.history[-1] == State.BROKEN


def test_errors_spread_beyond_the_window_never_break_it(make: Callable[..., Component]) -> None:
    ticks = itertools.count(step=4000.0)  # more than errorResetTime (3600 s) between errors
    c = make("A", {"run": "exit 1"}, clock=lambda: next(ticks))
    c.start()
    assert wait_until(lambda: c.history.count(State.ERRORED) >= 5)
    assert State.BROKEN not in c.history


def test_error_reset_time_comes_from_the_lifecycle(make: Callable[..., Component]) -> None:
    ticks = itertools.count(step=20.0)
    c = make("A", {"errorResetTime": 10, "run": "exit 1"}, clock=lambda: next(ticks))
    c.start()
    assert wait_until(lambda: c.history.count(State.ERRORED) >= 4)
    assert State.BROKEN not in c.history


def test_startup_stays_starting_until_updatestate_running(
    make: Callable[..., Component], tmp_path: Path
) -> None:
    c = make("A", {"startup": "echo $$ > pid; exec sleep 30"})
    c.start()
    pid_file = tmp_path / "work/A/pid"
    assert wait_until(pid_file.exists)
    time.sleep(0.3)
    assert c.state == State.STARTING
    c.report_state("RUNNING")
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    pid = int(pid_file.read_text())
    assert alive(pid)  # the startup process keeps running
    assert c.stop() == State.FINISHED
    assert wait_until(lambda: not alive(pid))


def test_startup_exiting_zero_is_running(make: Callable[..., Component]) -> None:
    c = make("A", {"startup": "true", "run": "exit 9"})
    c.start()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    time.sleep(0.3)
    # the run step is not run when there is a startup step
    assert c.state == State.RUNNING


def test_startup_timeout_errors_and_repeated_timeouts_break(make: Callable[..., Component]) -> None:
    c = make("A", {"startup": {"Script": "sleep 30", "Timeout": 0.3}})
    c.start()
    assert c.wait_for([State.BROKEN], WAIT) == State.BROKEN
    assert c.history.count(State.STARTING) == 3


def test_install_failure_and_timeout_retry_install_then_break(
    make: Callable[..., Component], tmp_path: Path
) -> None:
    c = make(
        "A", {"install": {"Script": "echo x >> tries; sleep 30", "Timeout": 0.3}, "run": "true"}
    )
    c.start()
    assert c.wait_for([State.BROKEN], WAIT) == State.BROKEN
    assert (tmp_path / "work/A/tries").read_text() == "x\nx\nx\n"
    assert State.INSTALLED not in c.history
    failing = make("B", {"install": "exit 2", "run": "true"})
    failing.start()
    assert failing.wait_for([State.BROKEN], WAIT) == State.BROKEN


def test_run_timeout_errors(make: Callable[..., Component]) -> None:
    c = make("A", {"run": {"Script": "sleep 30", "Timeout": 0.3}})
    c.start()
    assert wait_until(lambda: State.ERRORED in c.history)


def test_sigterm_ignored_gets_sigkill_and_leaves_no_orphans(
    make: Callable[..., Component], tmp_path: Path
) -> None:
    c = make(
        "A",
        {
            "run": "trap '' TERM; sleep 300 & echo $! > child; echo $$ > pid;"
            " while true; do sleep 0.05; done",
            "shutdown": "echo bye > shutdown-ran",
        },
    )
    c.start()
    work = tmp_path / "work/A"
    assert wait_until(lambda: (work / "pid").exists() and (work / "child").exists())
    pid, child = int((work / "pid").read_text()), int((work / "child").read_text())
    started = time.monotonic()
    assert c.stop() == State.FINISHED
    took = time.monotonic() - started
    assert (work / "shutdown-ran").read_text() == "bye\n"
    assert 0.4 <= took < 5.0  # waited the grace period (0.5 s), then SIGKILL
    assert wait_until(lambda: not alive(pid) and not alive(child))


def test_skipif(make: Callable[..., Component], tmp_path: Path) -> None:
    c = make(
        "A",
        {
            "install": {"Script": "touch installed", "Skipif": "onpath sh"},
            "startup": {"Script": "touch started", "Skipif": "! exists marker"},
            "run": {"Script": "touch ran; sleep 30", "Skipif": f"exists {tmp_path}/nothing-here"},
        },
    )
    c.start()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    work = tmp_path / "work/A"
    assert wait_until((work / "ran").exists)
    assert not (work / "installed").exists() and not (work / "started").exists()


def test_an_invalid_skipif_is_an_error(make: Callable[..., Component]) -> None:
    c = make("A", {"run": {"Script": "true", "Skipif": "whenever sh"}})
    c.start()
    assert c.wait_for([State.BROKEN], WAIT) == State.BROKEN


def test_no_lifecycle_finishes(make: Callable[..., Component]) -> None:
    c = make("Model", {})
    c.start()
    assert c.wait_for([State.FINISHED], WAIT) == State.FINISHED


def test_updatestate_errored_restarts_and_reinstall_leaves_broken(
    make: Callable[..., Component], tmp_path: Path
) -> None:
    c = make("A", {"install": "echo x >> installs", "run": "sleep 30"})
    c.start()
    for errors in range(1, 4):

        def started(n: int = errors) -> bool:
            return c.history.count(State.RUNNING) == n

        def errored(n: int = errors) -> bool:
            return State.BROKEN in c.history or c.history.count(State.ERRORED) == n

        assert wait_until(started)
        assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
        c.report_state(State.ERRORED)
        assert wait_until(errored)
    assert c.wait_for([State.BROKEN], WAIT) == State.BROKEN
    c.request_reinstall()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    assert (tmp_path / "work/A/installs").read_text() == "x\nx\n"
    with pytest.raises(ValueError, match="RUNNING or ERRORED"):
        c.report_state("FINISHED")


def test_components_run_concurrently_and_close_all_stops_them(
    manager: LifecycleManager, make: Callable[..., Component], tmp_path: Path
) -> None:
    names = ["A", "B", "C"]
    for name in names:
        make(name, {"run": "echo $$ > pid; trap '' TERM; while true; do sleep 0.05; done"})
    for c in manager.components.values():
        c.start()
    for name in names:
        assert manager.components[name].wait_for([State.RUNNING], WAIT) == State.RUNNING
    assert wait_until(lambda: all((tmp_path / "work" / n / "pid").exists() for n in names))
    pids = [int((tmp_path / "work" / n / "pid").read_text()) for n in names]
    started = time.monotonic()
    manager.close_all()
    assert time.monotonic() - started < 3.0  # in parallel, not one grace period after another
    assert wait_until(lambda: not any(alive(p) for p in pids))


# -- updates in place (GenericExternalService.java:118-157, Lifecycle.java:933-977) --------------


def test_a_reinstall_asked_while_installing_installs_again_then_runs(make, tmp_path) -> None:
    c = make("A", {"install": "echo v1 >> installs; sleep 0.5", "run": "sleep 30"})
    c.start()
    assert wait_until(lambda: (tmp_path / "work/A/installs").exists())
    c.update({"install": "echo v2 >> installs", "run": "sleep 30"}, version="2.0.0")
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    time.sleep(0.3)
    # NEW is left once it is reached (LC:365-369): no NEW <-> INSTALLED loop
    assert c.history.count(State.NEW) <= 3 and c.state == State.RUNNING
    assert (tmp_path / "work/A/installs").read_text().split() == ["v1", "v2"]


def test_a_reinstall_waiting_for_dependencies_does_not_loop(make) -> None:
    ready = {"now": False}
    c = make("A", {"install": "true", "run": "sleep 30"}, dependencies_ready=lambda: ready["now"])
    c.start()
    assert c.wait_for([State.INSTALLED], WAIT) == State.INSTALLED
    c.update({"install": "echo v2", "run": "sleep 30"}, version="2.0.0")
    time.sleep(1.0)
    assert len(c.history) < 12, c.history  # installed again once, now waiting
    ready["now"] = True
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING


def test_a_restart_does_not_override_a_pending_reinstall(make, tmp_path) -> None:
    c = make("A", {"install": "echo v1 >> installs", "run": "sleep 30"})
    c.start()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    c.update({"install": "echo v2 >> installs", "run": "sleep 30"}, version="2.0.0")
    c.request_restart()  # e.g. the HARD dependency listener, in the same deployment
    assert wait_until(lambda: c.history.count(State.RUNNING) == 2)
    assert (tmp_path / "work/A/installs").read_text().split() == ["v1", "v2"]


def test_a_lifecycle_change_starts_a_finished_component_again(make, tmp_path) -> None:
    c = make("A", {"run": "echo old >> runs"})
    c.start()
    assert c.wait_for([State.FINISHED], WAIT) == State.FINISHED
    c.update({"run": "echo new >> runs"}, version="")
    assert wait_until(lambda: (tmp_path / "work/A/runs").read_text().split() == ["old", "new"])
    assert c.wait_for([State.FINISHED], WAIT) == State.FINISHED
    assert c.reached_desired_state


def test_a_change_of_the_shutdown_step_alone_restarts_nothing(make, tmp_path) -> None:
    c = make("A", {"run": "echo run >> runs; sleep 30", "shutdown": "echo one >> stops"})
    c.start()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    c.update({"run": "echo run >> runs; sleep 30", "shutdown": "echo two >> stops"}, version="")
    time.sleep(0.5)
    assert c.history.count(State.RUNNING) == 1 and c.state == State.RUNNING
    c.request_restart()
    assert wait_until(lambda: c.history.count(State.RUNNING) == 2)
    c.stop(WAIT)
    # the stop of a start runs the shutdown step cached at that start (GES:366-376, 580-587)
    assert (tmp_path / "work/A/stops").read_text().split() == ["one", "two"]


def test_a_run_that_finishes_keeps_a_pending_reinstall(make, tmp_path) -> None:
    c = make("A", {"install": "echo v1 >> installs", "run": "sleep 30"})
    c.start()
    assert c.wait_for([State.RUNNING], WAIT) == State.RUNNING
    c.update({"install": "echo v2 >> installs", "run": "sleep 30"}, version="2.0.0")
    c._request_stop()  # the run exits 0 in the same instant: what GES:513-517 asks for
    # the reinstall is kept, and FINISHED follows it (desired states NEW, FINISHED: LC:984-991)
    assert wait_until(lambda: (tmp_path / "work/A/installs").read_text().split() == ["v1", "v2"])
    assert c.wait_for([State.FINISHED], WAIT) == State.FINISHED
