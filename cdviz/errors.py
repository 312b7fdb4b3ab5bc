"""The one base class of errors a user can fix: bad input, options or files.

Each error's message names the item and the fix. The CLI turns any ``CdvizError`` into its
message and exit code 2; everything else is a bug and keeps its traceback.
"""


class CdvizError(Exception):
    """Bad input, options or files; the message says what and how to fix it."""


class OptionError(CdvizError, ValueError):
    """A command option outside what the command can do."""
