"""User-facing errors.

:class:`HadwareError` and its subclasses carry a message meant for the user: the command line
prints it on one line and exits with status 1. Configuration checks raise ``TypeError`` and
``ValueError`` (as Amaranth's own constructors do); the command line reports those the same way.
"""


class HadwareError(Exception):
    """An error caused by the user's input (a file, a value, an option), not by a bug."""


class InputError(HadwareError):
    """An input vector file does not fit the block's configuration."""


class ToolError(HadwareError):
    """An external tool (Verilator, Yosys, nextpnr, a simulator) failed."""
