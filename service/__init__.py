"""memplan's HTTP service and CLI: thin routes and commands over the planner's request objects."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memplan")
except PackageNotFoundError:  # a source checkout that was never `pip install`ed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
