"""The project's exceptions and warnings. `UserError` is what the user can fix (a wrong path, a bad setting, a file that
is not what it should be): the CLI prints its message as one line and exits 2. Anything else is an internal
error: the CLI names it and says how to see the traceback."""


class FunctionalHeadsError(Exception):
    """Base of every exception this package raises on purpose."""


class UserError(FunctionalHeadsError, ValueError):
    """Bad input: the message says what was wrong and what to do. A ValueError, so callers that caught
    ValueError keep working."""


class MissingDependency(UserError, ImportError):
    """An optional dependency is not installed: the message names the extra that brings it."""


class FunctionalHeadsWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. a head map that changes nothing);
    the CLI prints it as one `warning:` line."""


class UnusableImage(UserError):
    """One item's image cannot be used (unreadable, a mode with no known scale, refused by the model's
    processor): the item is recorded as unusable with this reason, or skipped, and the run goes on."""
