"""smartcity: the platform's core, shared by every package.

Settings, the wire contract, topic names, the lake and the embedded local services live
here once, so the simulator, the stream worker, the Dagster definitions and the API all
import the same definitions instead of copying them.
"""

__version__ = "0.1.0"
