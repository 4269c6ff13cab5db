"""smartcity_stream."""
