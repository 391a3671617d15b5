"""Test-wide settings: quiet TensorFlow, keep Keras on the backend CI installs, no Hypothesis deadline."""

import os

from hypothesis import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Hypothesis fails an example that takes over 200 ms by default: on a loaded 2-core machine that is the clock, not a
# bug. The properties are checked for what they compute; how long an example takes is not part of them.
settings.register_profile("fedlens", deadline=None)
settings.load_profile("fedlens")
