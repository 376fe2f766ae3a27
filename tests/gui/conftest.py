"""GUI test fixtures: a qasync loop on pytest-qt's QApplication, windows with tiny models.

The tests drive a real window under Xvfb (pytest-xvfb starts it); coroutines run with
``run(coro)``, which spins the qasync loop, i.e. the Qt event loop, until they finish.
"""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="session")
def qt_loop(qapp):
    """One qasync event loop for the whole session, on pytest-qt's QApplication."""
    import qasync

    qapp.setQuitOnLastWindowClosed(False)  # closing a test window must not stop the loop
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()  # while the QApplication still exists (qasync disconnects Qt signals)


@pytest.fixture
def run(qt_loop):
    """``run(coroutine, timeout=s)``: run it on the qasync loop and return its result."""

    def run_coroutine(coroutine, timeout: float = 120.0):
        return qt_loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    return run_coroutine


@pytest.fixture
def make_window(tiny_models, qt_loop, qtbot):
    """Build, show and start main windows (worker on tiny models); all are closed afterwards."""
    from app.settings import load_settings
    from app.ui.main_window import MainWindow

    windows = []

    def make(**kwargs):
        window = MainWindow(kwargs.pop("settings", None) or load_settings(), **kwargs)
        window.show()
        window.start()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()  # closes the QtInteractor and stops the worker process
    for window in windows:
        assert window.client.pid is None or window.client.state == "stopped"


@pytest.fixture(autouse=True)
def no_plotter_outlives_a_test():
    """Like pyvistaqt's own suite: every QtInteractor must be closed by the end of the test."""
    from pyvista.plotting import plotter as pv_plotter

    yield
    alive = [p for p in list(pv_plotter._ALL_PLOTTERS.values()) if not getattr(p, "_closed", True)]
    for leaked in alive:
        leaked.close()
    assert not alive, f"{len(alive)} plotter(s) were not closed"


@pytest.fixture
def window(make_window, run):
    """A started window with an empty library and its models loaded."""
    window = make_window()
    run(window.client.wait_models(), timeout=120)
    return window
