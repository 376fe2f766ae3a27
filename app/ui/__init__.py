"""The PySide6 desktop interface: main window, panels, table models, viewer.

Imported only by the ``gui`` subcommand; the engine never imports it.
"""
