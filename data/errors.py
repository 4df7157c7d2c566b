"""The one error the data side raises: bad or missing data, with a message that names the file, the row and what to
do (printed as one line by the scripts, exit code 2)."""


class DataError(ValueError):
    """Bad or missing data, with a message that names the file, the line and what to do."""
