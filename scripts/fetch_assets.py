"""Fetches the real models and data sets into the asset cache: see sporeling/assets.py.

    python scripts/fetch_assets.py [NAMES...] [--list]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sporeling.assets import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
