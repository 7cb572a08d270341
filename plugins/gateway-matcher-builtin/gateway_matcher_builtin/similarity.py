"""Key normalisation and Segment's "similar" rule live in the core (``gateway.similarity``), so
custom matchers from the config use exactly the same rule as these built-in ones."""

from gateway.similarity import *  # noqa: F403
from gateway.similarity import __all__  # noqa: F401
