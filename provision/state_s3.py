"""State backend `s3`: one cluster's state in an S3 bucket (boto3), shared by every operator
and cron host.

Objects under `<state.prefix>/<cluster>/`: `state.json`, `lock.json` and `blobs/<name>`.
Every write of the state is conditional (If-None-Match: * when there is none yet, If-Match
on the ETag that was read otherwise), so a writer that read an older document fails
instead of overwriting; the lock is created with If-None-Match: * and removed with
If-Match on its own ETag. A lock older than LOCK_TTL (its holder crashed) is taken over
with If-Match on the stale lock's ETag. Secrets are stored with server-side encryption.
The endpoint and credentials are boto3's (AWS_ENDPOINT_URL, AWS_PROFILE, ...).
"""
from __future__ import annotations

import calendar
import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import LockHeld
from .state import (StateError, StateStore, check_blob_name, describe_holder, empty_state, encode_state, kept_alive,
                    lock_holder, next_document, parse_document)

if TYPE_CHECKING:
    from botocore.client import BaseClient  # what boto3.client("s3") returns

    from .spec import Spec

LOCK_TTL = 300  # seconds without a refresh after which a lock is stale
REFRESH = LOCK_TTL / 5


class S3StateStore(StateStore):
    """StateStore in S3 with conditional writes for the state and its lock."""

    backend = "s3"

    def __init__(self, spec: Spec, state_dir: Path, client: BaseClient | None = None):
        super().__init__(spec.name, Path(state_dir) / spec.name)
        self.bucket = spec.state.bucket
        self.base = f"{spec.state.prefix.strip('/')}/{spec.name}"
        self.region = spec.state.region
        self._client = client
        self._etag: str | None = None

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.base}"

    @property
    def client(self) -> BaseClient:
        if self._client is None:
            import boto3
            self._client = boto3.client("s3", region_name=self.region)
        return self._client

    def _error(self, what: str, err: Exception) -> StateError:
        return StateError(f"state in s3://{self.bucket}/{self.base}: cannot {what}: {err}")

    @staticmethod
    def _code(err: Exception) -> str:
        return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))

    def _get(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            return obj["Body"].read(), obj["ETag"]
        except ClientError as err:
            if self._code(err) in ("NoSuchKey", "404"):
                return None
            raise self._error(f"read {key}", err) from None
        except BotoCoreError as err:
            raise self._error(f"read {key}", err) from None

    def _put(self, key: str, data: bytes, what: str, **conditions: str) -> str | None:
        """Put; returns the new ETag, or None when a condition failed."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **conditions)["ETag"]
        except ClientError as err:
            if self._code(err) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None
            raise self._error(what, err) from None
        except BotoCoreError as err:
            raise self._error(what, err) from None

    # -- the document --------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        key = f"{self.base}/state.json"
        got = self._get(key)
        if got is None:
            self._etag = None
            return empty_state(self.cluster)
        raw, etag = got
        doc = parse_document(raw, f"s3://{self.bucket}/{key}", self.cluster)
        self._etag = etag
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        current = self.read()
        new = next_document(doc, current, self.cluster, where=f"s3://{self.bucket}/{self.base}/state.json")
        data = encode_state(new).encode()
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        etag = self._put(f"{self.base}/state.json", data, "write the state", ServerSideEncryption="AES256",
                         **condition)
        if etag is None:
            raise StateError(f"s3://{self.bucket}/{self.base}/state.json changed while it was being written "
                             "(another writer); nothing was overwritten: re-run")
        self._etag = etag
        doc["serial"] = new["serial"]

    # -- the lock ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        key = f"{self.base}/lock.json"
        holder = lock_holder(command)
        data = json.dumps(holder, sort_keys=True).encode()
        etag = self._put(key, data, "take the lock", IfNoneMatch="*")
        if etag is None:
            got = self._get(key)
            other: dict[str, Any] = {}
            if got is not None:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    other = json.loads(got[0])
            if got is not None and self._stale(other):
                etag = self._put(key, data, "take over a stale lock", IfMatch=got[1])
            if etag is None:
                raise LockHeld(f"cluster {self.cluster!r} is locked by {describe_holder(other)}; "
                               "try again when it has finished", other)
        state = {"etag": etag}

        def refresh() -> None:
            holder["refreshed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            new = self._put(key, json.dumps(holder, sort_keys=True).encode(), "refresh the lock",
                            IfMatch=state["etag"])
            if new:
                state["etag"] = new

        try:
            with kept_alive(REFRESH, refresh):
                yield
        finally:
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=state["etag"])

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        stamp = holder.get("refreshed") or holder.get("since")
        if not isinstance(stamp, str):
            return False  # no time recorded: never take it over
        try:
            when = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
        except (TypeError, ValueError):
            return False  # unreadable: never take it over
        return time.time() - when > LOCK_TTL

    # -- blobs ---------------------------------------------------------------------------
    def _blob_key(self, name: str) -> str:
        return f"{self.base}/blobs/{check_blob_name(name)}"

    def read_blob(self, name: str) -> bytes | None:
        got = self._get(self._blob_key(name))
        return None if got is None else got[0]

    def write_blob(self, name: str, data: bytes, secret: bool = True) -> None:
        extra = {"ServerSideEncryption": "AES256"} if secret else {}
        if self._put(self._blob_key(name), data, f"write {name}", **extra) is None:
            raise StateError(f"s3: cannot write {name}")

    def delete_blob(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._blob_key(name))
        except (ClientError, BotoCoreError) as err:
            raise self._error(f"delete {name}", err) from None

    def list_blobs(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError
        base = f"{self.base}/blobs/"
        names: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=base + prefix):
                names += [o["Key"][len(base):] for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as err:
            raise self._error("list blobs", err) from None
        return sorted(names)
