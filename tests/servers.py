"""Real servers for tests and benchmarks, each a process of its own on 127.0.0.1:

- `MlflowServer`: an `mlflow server` on a SQLite file or any database URI; can be stopped and restarted.
- `PostgresServer`: `initdb` in a temporary folder and `postgres` on a free port. Debian's
  `postgresql` package provides the binaries (`make postgres` installs it when missing, as
  `make browser` does Chromium). PostgreSQL refuses to run as root: as root, the server runs as the
  package's `postgres` user. A missing or unstartable PostgreSQL is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout_s} s")


# MLflow 3's server also starts a job runner and a Huey consumer (for its GenAI jobs) unless told
# not to: two more processes per server, which nothing here uses.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class MlflowServer:
    """An `mlflow server` subprocess on 127.0.0.1, its backend a SQLite file in `root` or the database
    `backend_uri` names; can be stopped and restarted."""

    def __init__(self, root: Path, backend_uri: str | None = None, workers: int = 1):
        self.root = root
        self.workers = workers
        self.backend_uri = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip
        log = open(self.root / "server.log", "ab")
        env = {**os.environ, **SERVER_ENV}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_healthy(self.url, self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # On a loaded machine the server's workers can outlast a graceful shutdown.
                os.killpg(self.process.pid, 9)
                self.process.wait()


DATABASE_USER = "scalesweep"


def postgres_bin_dir() -> Path:
    """The folder of initdb and postgres: $SCALESWEEP_POSTGRES_BIN, Debian's newest, or PATH."""
    if os.environ.get("SCALESWEEP_POSTGRES_BIN"):
        return Path(os.environ["SCALESWEEP_POSTGRES_BIN"])
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL is not installed: run `make postgres` (Debian's postgresql package) or set SCALESWEEP_POSTGRES_BIN "
        "to the folder holding initdb and postgres"
    )


class PostgresServer:
    """One PostgreSQL cluster of its own on 127.0.0.1 only, trust auth or, given a password, password
    auth (scram-sha-256) as a production database has; `create_database` hands out URIs."""

    def __init__(self, password: str | None = None) -> None:
        self.password = password
        self.bin = postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="scalesweep-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.as_user = "postgres" if os.geteuid() == 0 else None
        if self.as_user:
            os.chmod(self.root, 0o755)
            user = pwd.getpwnam(self.as_user)
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.as_user, "--", *args] if self.as_user else list(args)

    def start(self, timeout_s: float = 60) -> None:
        auth = ["--auth=trust"]
        if self.password:
            (self.root / "pwfile").write_text(self.password)
            if self.as_user:
                shutil.chown(self.root / "pwfile", self.as_user)
            auth = ["--auth=scram-sha-256", f"--pwfile={self.root / 'pwfile'}"]
        initdb = self._command(str(self.bin / "initdb"), "-D", str(self.data), "-U", DATABASE_USER, *auth, "-E", "UTF8")
        done = subprocess.run(initdb, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        log = open(self.root / "postgres.log", "ab")
        server = self._command(
            str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
            "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=200",
        )  # fmt: skip
        self.process = subprocess.Popen(server, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {(self.root / 'postgres.log').read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"postgres on port {self.port} not ready after {timeout_s} s")

    def create_database(self, name: str) -> str:
        """A new database; its SQLAlchemy URI (postgresql://: SQLAlchemy 2.1 picks the psycopg 3 driver)."""
        created = subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DATABASE_USER, name],
            capture_output=True, text=True, env={**os.environ, **({"PGPASSWORD": self.password} if self.password else {})},
        )  # fmt: skip
        if created.returncode:
            raise RuntimeError(f"createdb {name} failed: {created.stderr.strip()}")
        return f"postgresql://{DATABASE_USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # smart shutdown: sessions end, then the server
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


SECURITY_DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"


def basic_auth_recipe() -> str:
    """The bash block of docs/security.md that starts MLflow's basic-auth server, as written there."""
    import re

    blocks = re.findall(r"```bash\n(.*?)```", SECURITY_DOC.read_text(), re.S)
    recipe = [block for block in blocks if "--app-name basic-auth" in block]
    assert len(recipe) == 1, "docs/security.md should hold one bash block that starts the basic-auth server"
    return recipe[0]


class BasicAuthMlflowServer:
    """MLflow's basic-auth server started by running docs/security.md's recipe in bash, its settings
    (folder, secrets, host, port, workers) pointed at `root`; the admin adds users over the REST API."""

    ADMIN = "admin"

    def __init__(self, root: Path, workers: int = 2):
        import secrets

        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.admin_password = secrets.token_urlsafe(18)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import secrets

        vault = self.root / "secrets"
        vault.mkdir(parents=True)
        (vault / "mlflow_admin_password").write_text(self.admin_password)
        (vault / "mlflow_secret_key").write_text(secrets.token_hex(32))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(
            MLFLOW_HOME=str(self.root / "home"), MLFLOW_SECRETS=str(vault), MLFLOW_HOST="127.0.0.1",
            MLFLOW_PORT=str(self.port), MLFLOW_WORKERS=str(self.workers),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # the recipe calls `mlflow`
        )  # fmt: skip
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            ["bash", "-e", "-c", basic_auth_recipe()], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_healthy(self.url, self.process)
        except RuntimeError:
            self.stop()  # no server (and its job consumers) left behind by a start that failed
            raise

    def admin_request(self, method: str, endpoint: str, **kwargs) -> requests.Response:
        response = requests.request(method, f"{self.url}{endpoint}", auth=(self.ADMIN, self.admin_password), timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def create_user(self, username: str) -> str:
        """A new user with the default permission (READ); returns its password."""
        import secrets

        password = secrets.token_urlsafe(18)
        self.admin_request("POST", "/api/2.0/mlflow/users/create", json={"username": username, "password": password})
        return password

    def stop(self) -> None:
        """Stop the server and everything in its process group (uvicorn's workers, MLflow's job consumers)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)  # the group outlives its leader: job consumers do not always follow it
        self.process.wait()
