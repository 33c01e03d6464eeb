"""A real MLflow tracking server for tests and the demo: `mlflow server` on SQLite.

The registry client is tested against MLflow itself, not a mock. `make mlflow`
(`hack/install-mlflow.sh`) installs the pinned mlflow (requirements/mlflow.txt) into a
virtualenv of its own in the modelops cache, never the project's: the operator has no
mlflow dependency. `MlflowServer` starts `mlflow server` on a free 127.0.0.1 port with
a SQLite backend store and an artifacts directory under its workdir, optionally under
a path prefix (`--static-prefix`, as behind a reverse proxy), waits until the REST API
answers, and stops it; it can be stopped and started again on the same port and data
(an outage drill). A missing install is an error naming the fix, never a skip.

With `basic_auth=(username, password)` it runs MLflow's own authentication
(`--app-name basic-auth`, HTTP basic auth), as an installation may: the admin user is
created from an auth config file written under the workdir (MLFLOW_AUTH_CONFIG_PATH; its
user store is a SQLite file there too), and the readiness probe logs in as that user.
The Flask-WTF the auth app needs is pinned in requirements/mlflow.txt.

MLflow 3.x's security middleware accepts Host headers of localhost and private IPs
only; 127.0.0.1 is one, so no --allowed-hosts is needed here (a server reached by a
cluster DNS name needs it: docs/operations.md). Its job runner (huey workers for
GenAI jobs) is turned off: the registry needs none of it and it doubles start time.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

from modelops_devcluster.binaries import cache_root, repo_root
from modelops_devcluster.process import ManagedProcess, free_port, stop_all, tail

PINS = Path("requirements") / "mlflow.txt"
INSTALL_SCRIPT = Path("hack") / "install-mlflow.sh"
MLFLOW_ENV = "MODELOPS_MLFLOW"
"""An `mlflow` command to use instead of the cached install."""
QUIET_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # nothing leaves the machine
    "DO_NOT_TRACK": "true",
}


class MlflowServerError(RuntimeError):
    """mlflow is not installed or the server did not come up."""


def pinned_version() -> str:
    """The mlflow version requirements/mlflow.txt pins."""
    root = repo_root()
    if root is None:
        raise MlflowServerError(f"no source checkout: set ${MLFLOW_ENV} to an mlflow command")
    match = re.search(r"^mlflow==(\S+)$", (root / PINS).read_text(), re.MULTILINE)
    if match is None:
        raise MlflowServerError(f"{PINS} pins no mlflow==")
    return match.group(1)


def mlflow_command() -> Path:
    """The installed `mlflow` ($MODELOPS_MLFLOW, else the cache); an error naming the fix."""
    override = os.environ.get(MLFLOW_ENV)
    path = Path(override) if override else cache_root() / f"mlflow-{pinned_version()}/bin/mlflow"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MlflowServerError(f"no mlflow at {path}: run `make mlflow` ({INSTALL_SCRIPT})")
    return path


AUTH_ENV = ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")
"""The caller's auth settings, never inherited: they would override the server's own."""
MIN_PASSWORD = 12
"""MLflow's auth app refuses a shorter admin password at start."""


class MlflowServer:
    """One `mlflow server` on a free loopback port, its data under `workdir`;
    `basic_auth=(admin username, admin password)` turns on MLflow's basic auth."""

    def __init__(
        self, workdir: Path, static_prefix: str = "", basic_auth: tuple[str, str] | None = None
    ) -> None:
        if basic_auth is not None and len(basic_auth[1]) < MIN_PASSWORD:
            raise ValueError(f"MLflow's admin password needs {MIN_PASSWORD} characters or more")
        self.workdir = Path(workdir)
        self.static_prefix = static_prefix.rstrip("/")
        self.basic_auth = basic_auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{self.static_prefix}"
        """The base URL the registry client is given."""
        self.process: ManagedProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mlflow.log"

    def start(self, timeout: float = 120.0) -> MlflowServer:
        """Start (or start again, same port and data) and wait until the API answers."""
        mlflow = mlflow_command()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(mlflow),
            "server",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--backend-store-uri=sqlite:///{self.workdir / 'mlflow.db'}",
            f"--artifacts-destination={self.workdir / 'artifacts'}",
            "--workers=1",
        ]
        if self.static_prefix:
            argv.append(f"--static-prefix={self.static_prefix}")
        env = {k: v for k, v in os.environ.items() if k not in AUTH_ENV} | QUIET_ENV
        if self.basic_auth is not None:
            argv.append("--app-name=basic-auth")
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self._auth_config(*self.basic_auth))
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(16))
        self.process = ManagedProcess.spawn("mlflow", argv, self.log_path, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.running():
                raise MlflowServerError(f"mlflow server exited:\n{tail(self.log_path)}")
            status = self.api_status()
            if status == 200:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise MlflowServerError(
                    f"mlflow server did not answer in {timeout:.0f}s (last status {status}):\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(0.2)

    def _auth_config(self, username: str, password: str) -> Path:
        """The auth app's config (owner-only: it holds the admin password), its user
        store beside the server's data."""
        path = self.workdir / "basic_auth.ini"
        path.touch(mode=0o600)
        path.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.workdir / 'basic_auth.db'}\n"
            f"admin_username = {username}\n"
            f"admin_password = {password.replace('%', '%%')}\n"  # configparser interpolates %
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # a good login is checked once a minute, not hashed on every request (one
            # worker: a password changed through the API is dropped from it at once)
            "auth_cache_ttl_seconds = 60\n"
        )
        return path

    def api_status(self) -> int:
        """HTTP status of a registered-models search, as the admin user with basic auth
        (0: no answer)."""
        url = f"{self.url}/api/2.0/mlflow/registered-models/search?max_results=1"
        request = urllib.request.Request(url)
        if self.basic_auth is not None:
            login = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            request.add_header("Authorization", f"Basic {login}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def stop(self) -> None:
        """Stop the server (its process group); its data stays for a restart."""
        if self.process is not None:
            stop_all([self.process], timeout=10.0)
            self.process = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
