"""Test-wide settings.

Hypothesis runs with no deadline (timings vary on a loaded 2-core machine; tests never assert time)
and prints the reproduction blob of any failure so it can be replayed.
"""

from hypothesis import settings

settings.register_profile("default", deadline=None, print_blob=True, max_examples=100)
settings.register_profile("thorough", deadline=None, print_blob=True, max_examples=2000)
settings.load_profile("default")
