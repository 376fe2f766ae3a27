"""Exceptions the engine raises, each with a message meant for a scientist, not a developer."""


class CrystalDesignerError(Exception):
    """Base class of all errors the engine reports to users."""


class StructureReadError(CrystalDesignerError):
    """A crystal file cannot be read or does not describe a usable crystal."""


class ModelError(CrystalDesignerError):
    """A shipped model is missing, altered or cannot be loaded."""


class CancelledError(CrystalDesignerError):
    """The user cancelled a long-running job."""
