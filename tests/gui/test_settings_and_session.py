"""Settings and session files: defaults, migration, corruption, atomic writes (mostly no Qt)."""

from __future__ import annotations

import json
import logging

from gui_support import requires_display

from app.session import SessionSnapshot, load_session, save_session, session_path
from app.settings import SETTINGS_VERSION, AppSettings, load_settings, save_settings, settings_path


def test_missing_settings_give_defaults():
    assert load_settings() == AppSettings()


def test_settings_round_trip_and_recent_files_are_bounded():
    settings = AppSettings(device="cpu")
    for i in range(15):
        settings.remember_recent(f"/data/{i}.cif")
    settings.remember_recent("/data/3.cif")
    assert save_settings(settings)
    loaded = load_settings()
    assert loaded.device == "cpu"
    assert loaded.recent_files[0] == "/data/3.cif" and len(loaded.recent_files) == 10
    assert len(set(loaded.recent_files)) == 10


def test_corrupt_settings_fall_back_to_defaults_and_are_kept_aside(caplog):
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("{ this is not json")
    with caplog.at_level(logging.WARNING):
        assert load_settings() == AppSettings()
    assert "corrupt" in caplog.text
    assert path.with_name("settings.json.corrupt").exists()


def test_wrongly_typed_values_are_replaced_one_by_one(caplog):
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": SETTINGS_VERSION, "device": "quantum", "recent_files": "x",
                                "generation": {"count": "many", "sigma": 0.7}}))
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.device == "auto" and settings.recent_files == []
    assert settings.generation.count == 100 and settings.generation.sigma == 0.7


def test_old_settings_are_migrated_and_newer_ones_reset():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"device": "cpu", "recent": ["/a.cif"]}))  # version 0: no version key
    migrated = load_settings()
    assert migrated.device == "cpu" and migrated.recent_files == ["/a.cif"]
    path.write_text(json.dumps({"version": SETTINGS_VERSION + 5, "device": "cpu"}))
    assert load_settings() == AppSettings()
    assert path.with_name(f"settings.json.v{SETTINGS_VERSION + 5}").exists()


def test_session_is_written_atomically_and_corruption_is_survived():
    snapshot = SessionSnapshot(library=[{"source": "/x/NaCl.cif", "name": "NaCl.cif", "properties": None}])
    assert save_session(snapshot)
    assert load_session().library == snapshot.library
    leftovers = [p for p in session_path().parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    session_path().write_text('{"version": 1, "library": [')  # a torn write from an older app
    assert load_session() is None
    assert load_session() is None  # the broken file was moved aside


@requires_display
def test_window_starts_with_a_corrupt_settings_file(make_window):
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\xff garbage")
    window = make_window()
    assert window.settings == AppSettings()
    assert window.isVisible()


@requires_display
def test_window_layout_and_generation_defaults_are_restored(make_window):
    from app.settings import load_settings

    window = make_window()
    assert window.client.pid is None or window.client.state in ("starting", "busy", "idle")
    window.docks["results"].hide()
    window.generate_panel.count.setValue(777)
    window.close()
    saved = load_settings()
    assert saved.window.state and saved.window.geometry and saved.generation.count == 777

    again = make_window(settings=saved)
    assert not again.docks["results"].isVisible()
    assert again.docks["library"].isVisible()
    assert again.generate_panel.count.value() == 777
    again.reset_layout()
    assert again.docks["results"].isVisible()


@requires_display
def test_the_window_constructor_starts_no_worker(tiny_models, qt_loop, qtbot):
    from app.ui.main_window import MainWindow

    window = MainWindow(AppSettings())
    try:
        assert window.client.pid is None and window.client.state == "stopped"
    finally:
        window.close()


@requires_display
def test_a_device_for_this_run_is_not_saved(make_window):
    from app.settings import load_settings, save_settings

    save_settings(AppSettings(device="auto"))
    window = make_window(device="cpu")
    assert window.device == "cpu" and window.settings.device == "auto"
    window.close()
    assert load_settings().device == "auto"
