"""TLS to the journal's Redis, configured as a Celery user configures the broker's.

A redis-server of the test's own listens on a TLS port, with a certificate signed by a
CA made for the test (``openssl``). The journal is the broker's Redis, so it must take
the broker's TLS settings: ``ssl_cert_reqs=CERT_REQUIRED`` in a ``rediss://`` URL, as
Celery spells it, and ``broker_use_ssl``.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_durable import DurableTask, get_invocation
from celery_durable.runtime import release_runtime
from tests.processes import RedisServer, free_port


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a certificate for 127.0.0.1 that it signed."""
    where = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=durable-test-ca")  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    signed = ("-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "san.ext")
    openssl("x509", "-req", "-in", "server.csr", *signed, "-out", "server.crt", "-days", "2")
    return {name: where / name for name in ("ca.crt", "server.crt", "server.key")}


@pytest.fixture
def tls_port(certificates: dict[str, Path]) -> Iterator[int]:
    port = free_port()
    server = RedisServer(
        options=(
            "--tls-port", str(port), "--tls-cert-file", str(certificates["server.crt"]),
            "--tls-key-file", str(certificates["server.key"]),
            "--tls-ca-cert-file", str(certificates["ca.crt"]), "--tls-auth-clients", "no",
        )
    )  # fmt: skip
    server.start()
    yield port
    server.kill()


def run_a_durable_task(broker_url: str, **conf: Any) -> None:
    """Run a durable task eagerly, journaled in the broker's Redis; check its journal."""
    app = Celery("tls", broker=broker_url, set_as_current=False)
    app.conf.update(durable_eager_journal="redis", durable_key_prefix="tls", **conf)

    @app.task(base=DurableTask, bind=True, shared=False)
    def greet(self: Any, name: str) -> str:
        return str(self.ctx.run("greet", lambda: f"hello {name}"))

    try:
        assert greet.apply(args=("ada",), task_id="tls-1").get() == "hello ada"
        inv = get_invocation(app, "tls-1")
        assert inv is not None and inv.status == "completed"
        assert [s.value for s in inv.steps] == ["hello ada"]
    finally:
        release_runtime(app)
        app.close()


def test_celerys_ssl_cert_reqs_in_a_rediss_url_reaches_the_journal(
    tls_port: int, certificates: dict[str, Path]
) -> None:
    url = (
        f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=CERT_REQUIRED"
        f"&ssl_ca_certs={certificates['ca.crt']}"
    )
    run_a_durable_task(url)


@pytest.mark.parametrize("scheme", ["rediss", "redis"])
def test_broker_use_ssl_reaches_the_journal(
    tls_port: int, certificates: dict[str, Path], scheme: str
) -> None:
    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(certificates["ca.crt"])}
    run_a_durable_task(f"{scheme}://127.0.0.1:{tls_port}/0", broker_use_ssl=tls)
