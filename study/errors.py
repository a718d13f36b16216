"""The errors `study` raises on purpose.

Each carries a one-line message that names the culprit (a field, a value, a URL).
The CLI turns them into that line on stderr and an exit code; nothing else in the
library prints or exits.
"""

from __future__ import annotations


class StudyError(Exception):
    """Base of our own errors: message is one line, exit code is 1."""

    exit_code = 1


class UsageError(StudyError):
    """Bad command-line usage or a bad spec: exit code 2."""

    exit_code = 2


class SpecError(UsageError):
    """A spec (file, built-in, or override) that fails validation."""


class DataError(UsageError):
    """A data set that cannot be loaded or used as given (a file, a column, a loader)."""


class StorageError(StudyError):
    """The storage cannot be opened or used (bad URL, server gone)."""


class StorageUsageError(StorageError, UsageError):
    """A storage URL or study name that is wrong as given: exit code 2."""

    exit_code = 2


class TooManyFailures(StudyError):
    """The study stopped because trials kept raising."""


class MissingDependency(StudyError, ImportError):
    """An optional package a call needs is not installed (e.g. pandas for `Table.to_pandas`)."""
