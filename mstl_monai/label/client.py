# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A dependency-free HTTP client for the MONAI Label server (standard library only, so it runs in the core
environment too; MONAI Label's own ``MONAILabelClient`` needs the label environment).

.. code-block:: python

    c = LabelClient("http://127.0.0.1:8000")
    code, res = c.json("POST", "/infer/mstl_covid_classification?image=slice_001&output=json")
    code, png, ctype = c.call("POST", "/infer/mstl_covid_classification?image=slice_001&output=image",
                              fields={"params": '{"heatmap": "gradcam"}'})
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LabelClient", "free_port", "multipart", "running_server", "serve"]


def multipart(fields: dict[str, tuple[str, bytes] | str]) -> tuple[bytes, str]:
    """Encode form fields (``name -> text`` or ``name -> (filename, bytes)``) as ``multipart/form-data``."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data = value
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode())
            out.write(b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class LabelClient:
    """Minimal MONAI Label REST client: ``call`` returns ``(status, body, content type)``, 4xx/5xx included.

    Args:
        base: the server's address, e.g. ``http://127.0.0.1:8000``.
    """

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(
        self, method: str, path: str, fields: dict | None = None, json_body: Any = None, timeout: float = 300
    ) -> tuple[int, bytes, str]:
        data, headers = None, {}
        if fields is not None:
            data, headers["Content-Type"] = multipart(fields)
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict]:
        """Like :meth:`call`, with the body parsed as JSON (``{"raw": text}`` when it is not JSON)."""
        code, body, _ = self.call(method, path, **kwargs)
        try:
            return code, json.loads(body)
        except json.JSONDecodeError:
            return code, {"raw": body.decode(errors="replace")}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    cmd: list[str],
    port: int,
    log_file: str | os.PathLike | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Iterator[LabelClient]:
    """Run the server command ``cmd`` (listening on ``port`` of 127.0.0.1), wait for ``/info/``, yield a client,
    and stop the command (its whole process group) afterwards.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout`` (with the end of its log).
    """
    log = open(log_file, "w") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)

    def tail() -> str:
        return Path(log_file).read_text()[-6000:] if log_file else "(no log file)"

    try:
        client = LabelClient(f"http://127.0.0.1:{port}")
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the MONAI Label server exited with {proc.returncode}:\n{tail()}")
            try:
                if client.call("GET", "/info/", timeout=10)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the MONAI Label server did not answer /info/ within {timeout:.0f} s:\n{tail()}")
            time.sleep(1)
        yield client
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if log is not subprocess.DEVNULL:
            log.close()


@contextlib.contextmanager
def serve(
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    python: str = sys.executable,
    log_file: str | os.PathLike | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> Iterator[LabelClient]:
    """Start ``python -m mstl_monai.label start`` on a free port of 127.0.0.1, wait for ``/info/``, yield a client,
    and stop the server (its whole process group) afterwards.

    Args:
        app_dir: the app folder (``python -m mstl_monai.label init``).
        studies: the datastore folder.
        python: the interpreter of the label environment (e.g. ``.venv-label/bin/python``).
        log_file: where the server's output goes (default: discarded).
        timeout: seconds to wait for ``/info/``.
        env: environment of the server (default: this one).

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout`` (with the end of its log).
    """
    port = free_port()
    cmd = [python, "-m", "mstl_monai.label", "start", "--app-dir", str(app_dir), "--studies", str(studies), "--port", str(port)]
    with running_server(cmd, port, log_file, timeout, env) as client:
        yield client
