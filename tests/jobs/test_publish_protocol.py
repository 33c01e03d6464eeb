"""The publish protocol on a real S3 server, as a state machine against a reference model.

One output prefix goes through random sequences of: a run publishing a result, a run
killed mid-upload (its marker and some files written, no manifest), someone else's
object appearing in an empty prefix, and a reader resolving the prefix. The model says
what each must do: publish into an empty or half-written prefix succeeds; into a
complete one is OutputExists, into a foreign one OutputNotEmpty (and nothing is
deleted); a reader sees exactly the last published result, refuses a half-written
prefix (IncompleteSource), and never sees a mix.
"""

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from modelops_jobs import objectstore, storage, transfer
from modelops_jobs.errors import PermanentError


def content(version: int) -> dict[str, bytes]:
    return {
        "config.json": f'{{"version": {version}}}'.encode(),
        f"weights-{version}.bin": bytes([version]) * (1000 + version),
        "sub/extra.txt": f"extra {version}".encode(),
    }


def test_publish_protocol_state_machine(
    s3_env: dict[str, str], s3_prefix: str, tmp_path: Path
) -> None:
    import obstore

    class Protocol(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.uri = f"{s3_prefix}/{uuid.uuid4().hex[:10]}"
            self.loc = objectstore.location(self.uri)
            self.store = objectstore.open_store(self.loc)
            self.state: Any = "empty"  # "empty" | "incomplete" | "foreign" | int (published)
            self.work = tmp_path / uuid.uuid4().hex[:10]

        def staged(self, version: int) -> Path:
            local = self.work / f"stage-{version}-{uuid.uuid4().hex[:6]}"
            for name, body in content(version).items():
                (local / name).parent.mkdir(parents=True, exist_ok=True)
                (local / name).write_bytes(body)
            storage.write_manifest(local, {"version": version})
            return local

        @rule(version=st.integers(0, 3))
        def publish(self, version: int) -> None:
            local = self.staged(version)
            if self.state in ("empty", "incomplete"):
                transfer.upload(local, self.uri)
                self.state = version
                return
            before = sorted(
                o["path"] for o in objectstore.list_objects(self.store, self.loc, self.loc.key)
            )
            with pytest.raises(PermanentError) as exc:
                transfer.upload(local, self.uri)
            want = "OutputNotEmpty" if self.state == "foreign" else "OutputExists"
            assert exc.value.reason == want
            after = sorted(
                o["path"] for o in objectstore.list_objects(self.store, self.loc, self.loc.key)
            )
            assert after == before, "a refused publish changed the prefix"

        @precondition(lambda self: self.state in ("empty", "incomplete"))
        @rule(version=st.integers(0, 3), files=st.integers(0, 2))
        def killed_mid_upload(self, version: int, files: int) -> None:
            obstore.put(self.store, self.loc.child(transfer.MARKER), b"{}")
            for name, body in list(content(version).items())[:files]:
                obstore.put(self.store, self.loc.child(name), body)
            self.state = "incomplete"

        @precondition(lambda self: self.state == "empty")
        @rule()
        def foreign_object(self) -> None:
            obstore.put(self.store, self.loc.child("theirs/data.bin"), b"not ours")
            self.state = "foreign"

        @rule()
        def read(self) -> None:
            resolver = storage.StorageResolver(cache_dir=str(self.work / "cache"))
            if self.state == "incomplete":
                with pytest.raises(PermanentError) as exc:
                    resolver.local_path(self.uri)
                assert exc.value.reason == "IncompleteSource"
                return
            if self.state == "empty":
                with pytest.raises(PermanentError) as exc:
                    resolver.local_path(self.uri)
                assert exc.value.reason == "NotFound"
                return
            local = resolver.local_path(self.uri)
            got = {
                p.relative_to(local).as_posix(): p.read_bytes()
                for p in local.rglob("*")
                if p.is_file() and p.name != "manifest.json"
            }
            if self.state == "foreign":
                assert got == {"theirs/data.bin": b"not ours"}
            else:
                assert got == content(self.state)

    run_state_machine_as_test(
        Protocol,
        settings=settings(
            max_examples=12,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
