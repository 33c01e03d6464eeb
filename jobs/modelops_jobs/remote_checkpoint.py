"""Checkpoints of runs whose output goes to an object store.

A pod's local disk dies with the pod, so a checkpoint that only lived there would not
help the retried pod. `SyncedCheckpointer` keeps the usual local directory (the
algorithms read and write it as a path: state.pt, perp's pruned.pt, cpt's pre-anneal
model) and mirrors it to `<output parent>/.<name>.checkpoint/` in the object store:
after every save it uploads the files that changed (each one a single object write,
so a reader sees the old or the new file, never half of one), and when it is created
it fetches what an earlier pod left. `clear()` after a published run removes both.
"""

from pathlib import Path
from typing import Any

from modelops_jobs import transfer
from modelops_jobs.checkpoint import Checkpointer


class SyncedCheckpointer(Checkpointer):
    """A Checkpointer whose directory is mirrored to an object-store prefix."""

    def __init__(self, directory: Path, remote: str, every: int = 100, rank: int = 0) -> None:
        super().__init__(directory, every, rank)
        self.remote = remote.rstrip("/")
        self._sent: dict[str, tuple[int, int]] = {}
        self._pull()

    def _pull(self) -> None:
        assert self.directory is not None
        found = transfer.download(self.remote, self.directory.parent / ".remote-checkpoints")
        if found is None or not found.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(found.rglob("*")):
            if path.is_file():
                rel = path.relative_to(found)
                target = self.directory / rel
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(path.read_bytes())
                self._sent[rel.as_posix()] = _stamp(target)
        transfer.clear_dir(found.parent)

    def push(self) -> None:
        """Upload every file of the local directory that changed since the last push."""
        if self.directory is None or not self.directory.exists():
            return
        for path in sorted(self.directory.rglob("*")):
            if not path.is_file() or _temporary(path.name):
                continue
            rel = path.relative_to(self.directory).as_posix()
            stamp = _stamp(path)
            if self._sent.get(rel) != stamp:
                transfer.put_file(path, f"{self.remote}/{rel}")
                self._sent[rel] = stamp

    def save(self, state: dict[str, Any]) -> None:
        super().save(state)
        self.push()

    def clear(self) -> None:
        super().clear()
        transfer.remove_prefix(self.remote)
        self._sent.clear()


def _temporary(name: str) -> bool:
    """A file being written (dot-files), except torch.distributed.checkpoint's index."""
    return name.startswith(".") and name != ".metadata"


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns
