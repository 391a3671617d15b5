"""Test-wide settings: quiet TensorFlow and keep Keras on the backend CI installs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
