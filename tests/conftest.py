"""Test-wide settings: hypothesis runs derandomized, so CI sees the same examples every time."""

from hypothesis import settings

settings.register_profile("sporeling", derandomize=True, print_blob=True)
settings.load_profile("sporeling")
