"""User settings of the desktop app: a typed, versioned dataclass stored as JSON.

The file lives in ``platformdirs.user_config_dir("crystal-designer")/settings.json``. Reading it
never raises: a corrupt file is moved aside and defaults are used, an older version is migrated,
a newer (unknown) version is moved aside and reset, and each of these is logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.engine.core.devices import DEVICE_CHOICES
from app.engine.core.errors import CrystalDesignerError
from app.engine.generation.settings import GenerationSettings
from app.engine.properties.pointnet_predictor import PREDICTOR_NAMES

logger = logging.getLogger(__name__)

APP_DIR_NAME = "crystal-designer"
SETTINGS_FILE = "settings.json"
#: Version written by this code. Bump it and add a migration when the layout changes.
SETTINGS_VERSION = 1
RECENT_FILES_LIMIT = 10


@dataclass
class GenerationDefaults:
    """The Generate panel's remembered values: a subset of the engine's ``GenerationSettings``.

    The defaults and the allowed ranges are the engine's (see ``app.engine.generation.settings``);
    the panel builds the full ``GenerationSettings`` from these and the Targets panel.

    Attributes
    ----------
    mode : str
        ``around``, ``random`` or ``interpolate``.
    count : int
        Number of latent samples.
    sigma : float
        Latent spread around the base (latent units).
    seed : int
        Random seed.
    min_distance : float
        Smallest allowed interatomic distance (Å).
    require_charge_balance, require_same_formula, require_novel, require_unique : bool
        Funnel filters that remove candidates.
    """

    # The engine's defaults, so the window starts where the command line does.
    mode: str = GenerationSettings.mode
    count: int = GenerationSettings.count
    sigma: float = GenerationSettings.sigma
    seed: int = GenerationSettings.seed
    min_distance: float = GenerationSettings.min_distance
    require_charge_balance: bool = GenerationSettings.require_charge_balance
    require_same_formula: bool = GenerationSettings.require_same_formula
    require_novel: bool = GenerationSettings.require_novel
    require_unique: bool = GenerationSettings.require_unique


@dataclass
class WindowLayout:
    """Main-window geometry and dock layout, as base64 of ``saveGeometry``/``saveState``."""

    geometry: str = ""
    state: str = ""


@dataclass
class AppSettings:
    """Everything the app remembers between runs (not the session's data: see ``app.session``).

    Attributes
    ----------
    version : int
        Layout version of the file.
    device : str
        Torch device for the worker: ``auto``, ``cpu``, ``cuda`` or ``mps``.
    predictor : str
        Property predictor of opened structures: ``cgcnn`` (graph models) or ``pointnet``.
    generation : GenerationDefaults
    last_open_folder, last_export_folder : str
        Folders the file dialogs start in ("" = home).
    recent_files : list of str
        Most recent first, at most ``RECENT_FILES_LIMIT``.
    window : WindowLayout
    """

    version: int = SETTINGS_VERSION
    device: str = "auto"
    predictor: str = "cgcnn"
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    last_open_folder: str = ""
    last_export_folder: str = ""
    recent_files: list[str] = field(default_factory=list)
    window: WindowLayout = field(default_factory=WindowLayout)

    def remember_recent(self, path: str | Path) -> None:
        """Put ``path`` first in the recent files (no duplicates, bounded length)."""
        text = str(path)
        self.recent_files = [text] + [p for p in self.recent_files if p != text]
        del self.recent_files[RECENT_FILES_LIMIT:]


def settings_path() -> Path:
    """Where the settings file lives (resolved at call time, so tests can redirect it)."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_DIR_NAME)) / SETTINGS_FILE


# --- migrations ---------------------------------------------------------------------------------

def _from_unversioned(data: dict) -> dict:
    """Version 0: pre-release files without a ``version`` key and with a flat recent list name."""
    data = dict(data)
    if "recent" in data and "recent_files" not in data:
        data["recent_files"] = data.pop("recent")
    data["version"] = 1
    return data


#: ``{old version: function returning the data at old version + 1}``.
_MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _from_unversioned}


def _migrate(data: dict) -> dict | None:
    """Bring ``data`` to ``SETTINGS_VERSION``; None when it cannot be (newer or unknown version)."""
    version = data.get("version", 0)
    if not isinstance(version, int) or version > SETTINGS_VERSION:
        return None
    while version < SETTINGS_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            return None
        data = step(data)
        logger.info("Settings migrated from version %s to %s.", version, data["version"])
        version = data["version"]
    return data


# --- typed reading ------------------------------------------------------------------------------

def _typed(cls, data: Any, where: str):
    """Build dataclass ``cls`` from ``data``, keeping defaults for missing or mistyped fields."""
    default = cls()
    if not isinstance(data, dict):
        logger.warning("Settings: %s is not an object; using defaults.", where)
        return default
    values = {}
    for spec in dataclasses.fields(cls):
        if spec.name not in data:
            continue
        current = getattr(default, spec.name)
        raw = data[spec.name]
        if dataclasses.is_dataclass(current):
            values[spec.name] = _typed(type(current), raw, f"{where}.{spec.name}")
        elif isinstance(current, list):
            if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
                values[spec.name] = list(raw)
            else:
                logger.warning("Settings: %s.%s is not a list of text; using the default.", where, spec.name)
        elif isinstance(current, bool):
            if isinstance(raw, bool):
                values[spec.name] = raw
            else:
                logger.warning("Settings: %s.%s is not true/false; using the default.", where, spec.name)
        elif isinstance(current, float) and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            values[spec.name] = float(raw)
        elif isinstance(current, int) and isinstance(raw, int) and not isinstance(raw, bool):
            values[spec.name] = raw
        elif isinstance(current, str) and isinstance(raw, str):
            values[spec.name] = raw
        else:
            logger.warning("Settings: %s.%s has the wrong type; using the default.", where, spec.name)
    return cls(**values)


def _checked(settings: AppSettings) -> AppSettings:
    """Replace values outside their allowed range by defaults (with a log line)."""
    defaults = AppSettings()
    if settings.device not in DEVICE_CHOICES:
        logger.warning("Settings: unknown device %r; using %r.", settings.device, defaults.device)
        settings.device = defaults.device
    if settings.predictor not in PREDICTOR_NAMES:
        logger.warning("Settings: unknown predictor %r; using %r.", settings.predictor, defaults.predictor)
        settings.predictor = defaults.predictor
    generation = settings.generation
    for spec in dataclasses.fields(GenerationDefaults):
        try:  # the engine's rules and bounds, one field at a time
            GenerationSettings(**{spec.name: getattr(generation, spec.name)})
        except CrystalDesignerError as problem:
            logger.warning("Settings: generation.%s: %s Using the default.", spec.name, problem)
            setattr(generation, spec.name, getattr(defaults.generation, spec.name))
    del settings.recent_files[RECENT_FILES_LIMIT:]
    settings.version = SETTINGS_VERSION
    return settings


def _move_aside(path: Path, suffix: str) -> None:
    """Keep an unusable settings file for inspection instead of overwriting it later."""
    try:
        os.replace(path, path.with_name(path.name + suffix))
    except OSError as error:
        logger.warning("Could not move %s aside: %s", path, error)


def load_settings(path: Path | None = None) -> AppSettings:
    """Read the settings; never raises.

    Parameters
    ----------
    path : Path, optional
        Settings file (default :func:`settings_path`).

    Returns
    -------
    AppSettings
        The stored settings, migrated if old, or defaults when missing or unusable.
    """
    path = path or settings_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return AppSettings()
    except OSError as error:
        logger.warning("Settings file %s cannot be read (%s); using defaults.", path, error)
        return AppSettings()
    try:
        data = json.loads(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError too
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
    except ValueError as error:
        logger.warning("Settings file %s is corrupt (%s); it was renamed to %s.corrupt and defaults are used.",
                       path, error, path.name)
        _move_aside(path, ".corrupt")
        return AppSettings()
    migrated = _migrate(data)
    if migrated is None:
        logger.warning("Settings file %s has unknown version %r; it was renamed to %s.v%s and defaults are used.",
                       path, data.get("version"), path.name, data.get("version"))
        _move_aside(path, f".v{data.get('version')}")
        return AppSettings()
    return _checked(_typed(AppSettings, migrated, "settings"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a crash leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def save_settings(settings: AppSettings, path: Path | None = None) -> bool:
    """Write the settings atomically; returns False (and logs) when the disk refuses."""
    path = path or settings_path()
    try:
        atomic_write_text(path, json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
        return True
    except OSError as error:
        logger.warning("Settings could not be saved to %s: %s", path, error)
        return False
