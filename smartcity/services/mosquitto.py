"""A real Eclipse Mosquitto broker on loopback: where sensors that speak MQTT publish.

Mosquitto is a system package (Debian installs it in /usr/sbin), so it is looked for there
as well as on PATH. It listens on 127.0.0.1 only, which is why anonymous clients are let in.
"""

from __future__ import annotations

import os
import pwd
import shutil

from smartcity.services.processes import (
    ServiceRecord,
    accepts,
    free_port,
    spawn,
    started_at,
    wait_until,
)
from smartcity.settings import Settings

NAME = "mqtt"
START_TIMEOUT_S = 30.0
SYSTEM_DIRS = ("/usr/sbin", "/usr/local/sbin")

# A bridge that is down keeps a persistent session: the broker queues its QoS 1 messages
# until it is back, so the queue must hold what sensors send meanwhile (the default is 1000).
# The in-flight window is how many QoS 1 messages await a PUBACK at once (the default, 20,
# makes throughput one round trip per 20 messages).
_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
user {user}
persistence true
persistence_location {data_dir}/
autosave_interval 60
max_queued_messages 1000000
max_inflight_messages 1000
log_dest stdout
log_type error
log_type warning
log_type notice
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


class MosquittoUnavailable(RuntimeError):
    """The mosquitto executable is not installed."""


def mosquitto_binary(path: str | None = None) -> str:
    """The `mosquitto` executable on `path` (PATH and the system folders by default)."""
    search = (
        path if path is not None else os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_DIRS])
    )
    found = shutil.which("mosquitto", path=search)
    if not found:
        raise MosquittoUnavailable("mosquitto not found: `apt-get install mosquitto` installs it")
    return found


def start(settings: Settings) -> ServiceRecord:
    """Write the configuration, start the broker and return once it accepts connections."""
    binary = mosquitto_binary()
    home = settings.runtime_dir / NAME
    data_dir = home / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = settings.mqtt_port or free_port()
    config = home / "mosquitto.conf"
    # Run as root, mosquitto switches to the `mosquitto` user unless told to stay who it is:
    # it would then lose access to its own data folder.
    user = pwd.getpwuid(os.getuid()).pw_name
    config.write_text(_CONF.format(port=port, user=user, data_dir=data_dir))
    log = home / "mosquitto.log"
    process = spawn([binary, "-c", str(config)], log)
    wait_until(lambda: accepts(port), process, START_TIMEOUT_S, "Mosquitto", log)
    return ServiceRecord(
        name=NAME,
        pid=process.pid,
        started_at=started_at(process),
        log=str(log),
        env={"SMARTCITY_MQTT_BROKER": f"127.0.0.1:{port}"},
    )
