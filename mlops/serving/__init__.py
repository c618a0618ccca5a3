"""Local endpoints with SageMaker's serving contract.

- ``server``: the model server (starlette + uvicorn workers) for an unpacked ``model.tar.gz``;
- ``front``: the reverse proxy that owns an endpoint's public port, so versions can change behind it;
- ``supervisor``: start/stop/list/logs/invoke and blue/green deployment of those processes;
- ``commands``: the ``mlops endpoints ...`` CLI.
"""

import contextlib
import http.client
import os
import socket
from collections.abc import Iterator

# Shared by the server and its supervisor; kept here so the CLI need not import the web stack.
CANNOT_SERVE = "cannot serve:"
READY_DIR_ENV = "MLOPS_READY_DIR"


@contextlib.contextmanager
def socket_address(path: str | os.PathLike, base: str | os.PathLike = ".") -> Iterator[str]:
    """An address for the Unix socket ``path`` (relative to ``base``) that fits ``sun_path`` (107 bytes)
    whatever the path's length: through its directory's fd, open while the context lasts."""
    directory, name = os.path.split(os.path.join(base, path))
    dir_fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dir_fd}/{name}"
    finally:
        os.close(dir_fd)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket; a path too long for ``sun_path`` is reached through its directory's fd."""

    def __init__(self, path: str | os.PathLike, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with socket_address(self.path) as address:
                sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def http_connection(address: int | str | os.PathLike, timeout: float) -> http.client.HTTPConnection:
    """A connection to a model server: ``127.0.0.1:address`` for a port, else the Unix socket at that path."""
    if isinstance(address, int):
        return http.client.HTTPConnection("127.0.0.1", address, timeout=timeout)
    return UnixHTTPConnection(address, timeout)
