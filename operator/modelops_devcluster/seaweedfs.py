"""A real S3-compatible server for tests and benchmarks: SeaweedFS's `weed server -s3`.

s3:// is tested against a real server, not a mock library. SeaweedFS is Apache-2.0
(no AGPL server is used); `hack/build-seaweedfs.sh` builds `weed` from source through
the Go module proxy into the modelops cache. `SeaweedS3` starts master, volume, filer
and S3 gateway in one process on free 127.0.0.1 ports, with one identity (an access
key pair) from an S3 config file, waits until the gateway answers a signed request,
creates buckets, and stops the process. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

from modelops_devcluster.binaries import cache_root, repo_root
from modelops_devcluster.process import ManagedProcess, free_port, stop_all, tail

BUILD_SCRIPT = Path("hack") / "build-seaweedfs.sh"
WEED_ENV = "MODELOPS_WEED"
REGION = "us-east-1"


class SeaweedError(RuntimeError):
    """The weed binary is missing or the server did not come up."""


def pinned_version() -> str:
    """The SeaweedFS version the build script pins (its SEAWEEDFS_VERSION default)."""
    root = repo_root()
    if root is None:
        raise SeaweedError(f"no source checkout: set ${WEED_ENV} to a weed binary")
    text = (root / BUILD_SCRIPT).read_text()
    match = re.search(r'SEAWEEDFS_VERSION="\$\{SEAWEEDFS_VERSION:-([^}]+)\}"', text)
    if match is None:
        raise SeaweedError(f"{BUILD_SCRIPT} pins no SEAWEEDFS_VERSION")
    return match.group(1)


def weed_binary() -> Path:
    """The built `weed` ($MODELOPS_WEED, else the cache); SeaweedError naming the fix."""
    override = os.environ.get(WEED_ENV)
    path = (
        Path(override) if override else cache_root() / "seaweedfs" / pinned_version() / "bin/weed"
    )
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SeaweedError(f"no weed binary at {path}: run `make seaweedfs` ({BUILD_SCRIPT})")
    return path


def weed_version() -> str:
    """`weed version`'s line (e.g. for a benchmark's record of what it measured)."""
    import subprocess

    out = subprocess.run([str(weed_binary()), "version"], capture_output=True, text=True)
    return (out.stdout.strip().splitlines() or ["unknown"])[0]


class SeaweedS3:
    """One `weed server -s3` on free loopback ports, with an access key pair."""

    def __init__(self, workdir: Path, access_key: str = "", secret_key: str = "") -> None:
        self.workdir = Path(workdir)
        self.access_key = access_key or "AK" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess | None = None

    def env(self) -> dict[str, str]:
        """The environment a job needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def start(self, timeout: float = 90.0) -> SeaweedS3:
        weed = weed_binary()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "modelops",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        argv = [
            str(weed),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={free_port()}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={free_port()}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={free_port()}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-master.volumeSizeLimitMB=256",
            "-master.telemetry=false",  # no usage reports: nothing leaves the machine
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            "-s3",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={free_port()}",
            f"-s3.config={config}",
        ]
        self.process = ManagedProcess.spawn("weed", argv, self.workdir / "weed.log")
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.running():
                raise SeaweedError(f"weed exited:\n{tail(self.process.log_path)}")
            status = self._request("GET", "/")
            if status == 200:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise SeaweedError(
                    f"weed S3 gateway did not answer in {timeout:.0f}s (last status "
                    f"{status}):\n{tail(self.workdir / 'weed.log')}"
                )
            time.sleep(0.2)

    def create_bucket(self, bucket: str, timeout: float = 60.0) -> None:
        """PUT /bucket (signed), retried until the volume layer accepts it."""
        deadline = time.monotonic() + timeout
        while True:
            status = self._request("PUT", f"/{bucket}")
            if status in (200, 409):
                return
            if time.monotonic() > deadline:
                raise SeaweedError(f"cannot create bucket {bucket}: HTTP {status}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_all([self.process], timeout=3.0)  # its data is scratch: no need to wait
            self.process = None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- a signed request (AWS Signature Version 4), enough for ListBuckets/CreateBucket
    def _request(self, method: str, path: str) -> int:
        now = dt.datetime.now(dt.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = f"127.0.0.1:{self.port}"
        payload = hashlib.sha256(b"").hexdigest()
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = (
            f"{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\n"
            f"x-amz-date:{amz_date}\n\n{signed}\n{payload}"
        )
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            self.endpoint + path,
            method=method,
            headers={
                "x-amz-date": amz_date,
                "x-amz-content-sha256": payload,
                "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0
