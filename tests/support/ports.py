"""A free loopback port, for servers that cannot bind port 0 and report the one they got."""

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
