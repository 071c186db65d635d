"""`AlignkitError`: the one base of every error a user can fix (a malformed recipe, a bad data record, a model
that does not load, an endpoint that is down, a checkpoint that is incomplete, a bad command-line value).

Each subclass keeps its standard base as well (`RecipeError` is a `ValueError`, `ModelLoadError` an `OSError`),
so library callers catch them as before. Its message names the file, record or field; `exit_code` is what the
command line exits with. The command line maps these errors to one line on stderr in one place
(`alignkit.cli.main`); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class AlignkitError(Exception):
    """An error the user can fix; the message says where (file, record, field) and what was expected."""

    exit_code: int = 2
