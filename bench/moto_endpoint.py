"""moto's EC2/S3/ELBv2 HTTP server on loopback for the benchmarks, with boto3 pointed at it
(AWS_ENDPOINT_URL and throwaway credentials) for the length of a `with` block."""
from __future__ import annotations

import contextlib
import os
import urllib.request
from typing import Iterator

ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """A fresh moto server's URL; the environment is restored and the server stopped after."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ENVIRONMENT}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")).read()
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
