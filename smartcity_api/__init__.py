"""smartcity_api."""
