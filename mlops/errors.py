"""Typed errors with a user-facing one-line message; the CLI turns them into a red line and an exit code."""


class MlopsError(Exception):
    """Base error: ``str(err)`` is the one line a user sees."""

    exit_code = 1


class ConfigError(MlopsError):
    """Invalid configuration: names the file, the dotted key and the reason."""

    exit_code = 2


class DefinitionError(MlopsError):
    """A pipeline definition that cannot be compiled, validated or run."""

    exit_code = 2


class ParameterError(MlopsError):
    """A ``--param`` override that the definition does not accept."""

    exit_code = 2
