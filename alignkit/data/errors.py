"""`DataError`: a data file, dataset or record is malformed; the message names the source, line/row and field."""

from __future__ import annotations

from alignkit.errors import AlignkitError


class DataError(AlignkitError, ValueError):
    """A data file or record is malformed; the message names file, line/row and field."""
