"""The state store: one versioned JSON document per cluster, blobs (PKI), and a lock.

Backends share one interface (`StateStore`) and are listed in `BACKENDS`. The `local`
backend keeps `<state dir>/<cluster>/` (mode 0700): `state.json` written atomically (temp file,
fsync, rename, fsync of the directory), secrets as 0600 files, and `lock`, held with flock so
that a crashed holder never leaves a stale lock behind.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from .errors import ActionError, LockHeld, UserError
from .files import secure_makedirs, write_file_atomic

if TYPE_CHECKING:
    from .spec import Spec

STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "lock"
BACKUP_GENERATIONS = 3  # previous state documents kept next to state.json (local backend)
STATE_DIR_ENV = "PROVISION_STATE_DIR"


class StateError(ActionError):
    """The state cannot be read or written safely; nothing was overwritten."""


class MissingBlob(StateError):
    """The state holds no blob `name` (yet): the phase that makes it has not run."""

    def __init__(self, name: str):
        super().__init__(f"state has no {name}")
        self.name = name


def empty_state(cluster: str) -> dict[str, Any]:
    return {"version": STATE_VERSION, "cluster": cluster, "serial": 0,
            "hosts": {}, "pools": {}, "phases": {}, "headroom": {}}


# Below this depth a state document is written compact, by json's C encoder: its indented form is
# encoded in Python, a second for a 50,000-host state (P5, issue 11); per-host lines cost as much.
INDENTED_LEVELS = 1


def encode_state(doc: Mapping[str, Any]) -> str:
    """`doc` as the state's JSON text: keys sorted, one top-level section per line (so a diff
    names the sections that changed), everything inside compact. Deterministic;
    the same JSON data as before (`json.loads` of either gives the same document), ending in a
    newline."""
    compact = json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode

    def encode(value: object, level: int) -> str:
        if level >= INDENTED_LEVELS or not isinstance(value, dict) or not value \
                or not all(isinstance(k, str) for k in value):
            return compact(value)
        pad = "  " * (level + 1)
        entries = [f"{pad}{compact(k)}: {encode(value[k], level + 1)}" for k in sorted(value)]
        return "{\n" + ",\n".join(entries) + "\n" + "  " * level + "}"

    return encode(doc, 0) + "\n"


def check_document(doc: object, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
        raise StateError(f"{where}: not a provision state document; refusing to touch it")
    if doc["version"] > STATE_VERSION:
        raise StateError(f"{where}: written by a newer provision (state version {doc['version']}, "
                         f"this one reads up to {STATE_VERSION}); upgrade provision")
    base = empty_state(doc.get("cluster", ""))
    base.update(doc)
    return base


def parse_document(raw: bytes | str, where: str, cluster: str, advice: str = "") -> dict[str, Any]:
    """The state document stored as JSON `raw` at `where`, checked to be a provision state of
    `cluster`; StateError (naming `where`) when it is corrupt, newer or another cluster's."""
    try:
        doc = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise StateError(f"{where}: corrupt state ({err}); refusing to overwrite it{advice}") from None
    doc = check_document(doc, where)
    if doc.get("cluster") not in ("", cluster):
        raise StateError(f"{where}: holds cluster {doc.get('cluster')!r}, not {cluster!r}")
    return doc


def next_document(doc: dict[str, Any], current: dict[str, Any], cluster: str,
                  where: str | None = None) -> dict[str, Any]:
    """The document to store in place of `current`: a copy of `doc` with version, cluster and
    the next serial. With `where` (shared backends), a `doc` read before another writer's
    change is refused, so nothing is overwritten."""
    serial = int(current.get("serial", 0))
    if where is not None and "serial" in doc and int(doc["serial"]) != serial:
        raise StateError(f"{where} changed while it was being written (another writer, serial "
                         f"{current.get('serial')} now, {doc['serial']} read); nothing was overwritten: re-run")
    new = copy.deepcopy(doc)
    new.update(version=STATE_VERSION, cluster=cluster, serial=serial + 1)
    return new


def check_blob_name(name: str) -> str:
    """`name` if it is a relative blob name that stays inside the store, else StateError."""
    if not name or name.startswith("/") or ".." in Path(name).parts:
        raise StateError(f"bad blob name {name!r}")
    return name


def lock_holder(command: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another provision process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} running "
            f"'{holder.get('command')}' since {holder.get('since')}")


@contextlib.contextmanager
def kept_alive(interval: float, refresh: Callable[[], None]) -> Iterator[None]:
    """Run the block while a daemon thread calls `refresh` every `interval` seconds (a shared
    backend's lock TTL); a failed refresh is ignored: the TTL then frees the lock."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):
                refresh()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class StateStore(ABC):
    """Where one cluster's state lives. Every method is safe to call without the lock except
    `write`, which callers do while holding it."""

    backend = "abstract"

    def __init__(self, cluster: str, workdir: Path):
        self.cluster = cluster
        self.workdir = workdir  # local scratch for this cluster (processes, caches, host roots)

    @abstractmethod
    def read(self) -> dict[str, Any]:
        """The state document; an empty one when none was written yet."""

    @abstractmethod
    def write(self, doc: dict[str, Any]) -> None:
        """Replace the state document atomically; bumps `serial`."""

    @abstractmethod
    def lock(self, command: str) -> contextlib.AbstractContextManager[None]:
        """Hold the cluster's exclusive lock; raises LockHeld at once when another holds it."""

    @abstractmethod
    def read_blob(self, name: str) -> bytes | None:
        """A stored file (PKI material, kubeconfigs) or None."""

    @abstractmethod
    def write_blob(self, name: str, data: bytes, secret: bool = True) -> None:
        """Store a file; secrets are readable by the owner only."""

    @abstractmethod
    def delete_blob(self, name: str) -> None:
        """Remove a stored file if present."""

    @abstractmethod
    def list_blobs(self, prefix: str = "") -> list[str]:
        """Names of stored files under `prefix`, sorted."""

    @property
    def location(self) -> str:
        """Where this cluster's state lives, said to the user (a path or a URL)."""
        return f"{self.backend}:{self.cluster}"

    def exists(self) -> bool:
        """Whether anything was ever recorded for this cluster (a state document or a blob)."""
        return self.read().get("serial", 0) > 0 or bool(self.list_blobs())

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, apply `change` to the document, write it back; returns the new document."""
        doc = self.read()
        change(doc)
        self.write(doc)
        return doc

    def blob_path(self, name: str) -> Path:
        """A local file holding the blob, for tools that want a path (etcdctl, ssh)."""
        data = self.read_blob(name)
        if data is None:
            raise MissingBlob(name)
        path = self.workdir / "cache" / name
        secure_makedirs(path.parent)
        write_file_atomic(path, data, 0o600)
        return path


class LocalStateStore(StateStore):
    """`<state dir>/<cluster>/`: state.json, blobs as files, and an flock'ed lock file."""

    backend = "local"

    def __init__(self, cluster: str, state_dir: Path):
        self.root = Path(state_dir) / cluster
        super().__init__(cluster, self.root)
        self._lock_fd: int | None = None
        self._made_dirs: set[Path] = set()  # by write_blob: made 0700 once, not on every write

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def location(self) -> str:
        return str(self.root.absolute())

    def backup_file(self, serial: int) -> Path:
        """The kept copy of the state document at `serial` (hidden: not a blob)."""
        return self.root / f".{STATE_FILE}.{serial}"

    def backups(self) -> list[Path]:
        """Kept previous state documents, newest first."""
        found = []
        for path in self.root.glob(f".{STATE_FILE}.*"):
            suffix = path.name.rsplit(".", 1)[1]
            if suffix.isdigit():
                found.append((int(suffix), path))
        return [path for _, path in sorted(found, reverse=True)]

    def _corrupt_advice(self) -> str:
        kept = self.backups()
        if kept:
            return (f". The previous generation is kept in {kept[0]}: restore it with "
                    f"`cp {kept[0]} {self.state_file}`, or move the file away to start over")
        return ". No earlier generation is kept; move it away to start over"

    def read(self) -> dict[str, Any]:
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return empty_state(self.cluster)
        except OSError as err:
            raise StateError(f"{self.state_file}: cannot read ({err.strerror})") from None
        return parse_document(raw, str(self.state_file), self.cluster, self._corrupt_advice())

    def write(self, doc: dict[str, Any], _before_rename: Callable[[Path], None] | None = None) -> None:
        current = self.read()  # refuses to overwrite a corrupt or newer file
        new = next_document(doc, current, self.cluster)
        secure_makedirs(self.root)
        data = encode_state(new).encode()
        self._keep_generation(current)
        write_file_atomic(self.state_file, data, 0o600, before_rename=_before_rename)
        doc["serial"] = new["serial"]

    def _keep_generation(self, current: dict[str, Any]) -> None:
        """Keep the document about to be replaced (a good one: read() parsed it) as a backup
        generation, and only the newest BACKUP_GENERATIONS of them."""
        if not current.get("serial") or not self.state_file.exists():
            return
        write_file_atomic(self.backup_file(int(current["serial"])), self.state_file.read_bytes(), 0o600)
        for old in self.backups()[BACKUP_GENERATIONS:]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        secure_makedirs(self.root)
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise LockHeld(f"cluster {self.cluster!r} is locked by {describe_holder(holder)}; "
                           "try again when it has finished", holder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(lock_holder(command)).encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        return {}

    def _blob_file(self, name: str) -> Path:
        return self.root / check_blob_name(name)

    def read_blob(self, name: str) -> bytes | None:
        try:
            return self._blob_file(name).read_bytes()
        except FileNotFoundError:
            return None

    def write_blob(self, name: str, data: bytes, secret: bool = True) -> None:
        path = self._blob_file(name)
        secure_makedirs(self.root, self._made_dirs)  # the cluster directory too: mkdir(parents=True) gives parents 0755
        secure_makedirs(path.parent, self._made_dirs)
        write_file_atomic(path, data, 0o600 if secret else 0o644)

    def delete_blob(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._blob_file(name).unlink()

    def list_blobs(self, prefix: str = "") -> list[str]:
        base = self._blob_file(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def blob_path(self, name: str) -> Path:
        path = self._blob_file(name)
        if not path.exists():
            raise MissingBlob(name)
        return path


def _open_local(spec: Spec, state_dir: Path) -> StateStore:
    return LocalStateStore(spec.name, state_dir)


def _open_etcd(spec: Spec, state_dir: Path) -> StateStore:
    from .state_etcd import EtcdStateStore  # python-etcd is loaded only for this backend
    return EtcdStateStore(spec, state_dir)


def _open_s3(spec: Spec, state_dir: Path) -> StateStore:
    from .state_s3 import S3StateStore  # boto3 is loaded only for this backend
    return S3StateStore(spec, state_dir)


# Backends by the spec's `state.backend` (the one table: a backend module registers nothing).
BACKENDS: dict[str, Callable[[Spec, Path], StateStore]] = {
    "local": _open_local,
    "etcd": _open_etcd,
    "s3": _open_s3,
}


def state_directory(spec: Spec, state_dir: str | os.PathLike[str] | None = None,
                    environ: Mapping[str, str] | None = None) -> Path:
    """The local state directory: `state_dir` (--state-dir), else $PROVISION_STATE_DIR, else the
    spec's state.path. An empty value is refused; so is --state-dir for a backend that is not
    local (it would be ignored). Raises UserError naming the option."""
    environ = os.environ if environ is None else environ
    backend = spec.state.backend
    if state_dir is not None:
        if not str(state_dir).strip():
            raise UserError("--state-dir: must not be empty (leave the option out to use state.path)")
        if backend != "local":
            raise UserError(f"--state-dir: the spec keeps state in {backend} (state.backend: {backend}); "
                            "--state-dir only applies to state.backend: local")
        return Path(state_dir)
    if STATE_DIR_ENV in environ and backend == "local":
        if not environ[STATE_DIR_ENV].strip():
            raise UserError(f"{STATE_DIR_ENV}: must not be empty (unset it to use state.path)")
        return Path(environ[STATE_DIR_ENV])
    return Path(spec.state.path)


def open_store(spec: Spec, state_dir: str | os.PathLike[str] | None = None) -> StateStore:
    """The store the spec names. `state_dir` (a directory already chosen, e.g. from
    `state_directory`) overrides $PROVISION_STATE_DIR and state.path; shared backends keep only
    their local scratch there."""
    directory = Path(state_dir) if state_dir is not None else state_directory(spec)
    backend = spec.state.backend
    if backend not in BACKENDS:
        raise StateError(f"state.backend {backend!r} is not available in this installation")
    return BACKENDS[backend](spec, directory)


def command_line() -> str:
    return " ".join(["provision", *sys.argv[1:]])[:200]
