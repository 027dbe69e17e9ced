"""Probe jobs: persistence (db, repository), admission, the bounded executor and the probe process.

Only `child` runs in the probe process; it imports the runner, and so torch, there and nowhere else.
"""

__all__: list[str] = []
