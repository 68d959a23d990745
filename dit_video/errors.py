"""The one base class of errors a user can cause and fix (a bad recipe, a damaged file, a full disk...).

The CLI prints any of these -- and ``ValueError``, ``OSError`` -- as one line naming the thing and the
fix, and exits 2; anything else is a bug and keeps its traceback. Imports nothing.
"""

from __future__ import annotations


class UserError(Exception):
    """Raised for a problem the message tells the user how to fix."""
