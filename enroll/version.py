"""The installed package's version, for `oneshot --version` and the service's /healthz and OpenAPI document."""
from __future__ import annotations


def installed_version() -> str:
    """The version pip recorded for `oneshot`, or "unknown" when running from a source tree that was never
    installed (importlib.metadata is imported here, not at CLI start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oneshot")
    except PackageNotFoundError:
        return "unknown"
