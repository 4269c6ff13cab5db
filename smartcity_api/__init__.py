"""smartcity_api: the REST service over the lake and the stream worker's live state."""

__version__ = "0.1.0"
