"""etcd's Auth service (users, roles, grants) over one gRPC channel: a batch of identities in one
TLS connection, with many requests in flight, instead of one etcdctl process per step.

Why gRPC and not etcd's JSON gateway: the gateway does not map a client certificate's Common
Name to an etcd user (etcd ignores the CN of requests the gateway proxies), so `root`'s
certificate would reach it unauthenticated. Over gRPC the certificate is the identity, as with
etcdctl. The few messages used here are encoded by hand (protobuf wire format, field numbers
from etcd's `etcdserverpb/rpc.proto` and `authpb/auth.proto`): no generated stubs needed.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Sequence
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]

from .client import Etcd, EtcdError

READWRITE = 2  # authpb.Permission.Type
IN_FLIGHT = 64  # requests sent before waiting for answers: bounds etcd's queue, not our count


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: an int as a varint, text and bytes (and nested messages) delimited."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _strings(message: bytes, number: int) -> list[str]:
    """The values of the repeated string field `number` of `message` (other fields skipped)."""
    found, at = [], 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while at < len(message):
        key = varint()
        wire = key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            size = varint()
            if key >> 3 == number:
                found.append(message[at:at + size].decode())
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise EtcdError(f"etcd auth: unexpected protobuf wire type {wire}")
    return found


# requests: (method, message); the method's answer is ignored except for UserList
def user_add(name: str) -> tuple[str, bytes]:
    return "UserAdd", _field(1, name) + _field(3, _field(1, 1))  # options.no_password: certificate only


def role_add(name: str) -> tuple[str, bytes]:
    return "RoleAdd", _field(1, name)


def role_grant_key(role: str, key: str) -> tuple[str, bytes]:
    """Read and write on the single key `key` (no range end)."""
    return "RoleGrantPermission", _field(1, role) + _field(2, _field(1, READWRITE) + _field(2, key))


def user_grant_role(user: str, role: str) -> tuple[str, bytes]:
    return "UserGrantRole", _field(1, user) + _field(2, role)


def user_delete(name: str) -> tuple[str, bytes]:
    return "UserDelete", _field(1, name)


def role_delete(name: str) -> tuple[str, bytes]:
    return "RoleDelete", _field(1, name)


def _identity(data: bytes) -> bytes:
    return data


class AuthSession:
    """One gRPC channel to the first endpoint of `etcd` that answers, as `etcd`'s identity."""

    def __init__(self, etcd: Etcd) -> None:
        self.timeout = etcd.timeout
        self.requests = 0  # sent over this session (tests count them)
        errors = []
        for endpoint in etcd.endpoints:
            channel = self._open(etcd, endpoint)
            try:
                grpc.channel_ready_future(channel).result(timeout=etcd.timeout)
            except grpc.FutureTimeoutError:
                channel.close()
                errors.append(f"{endpoint}: not connected in {etcd.timeout:g}s (down, or TLS refused)")
                continue
            self.channel = channel
            return
        raise EtcdError(f"etcd auth: no endpoint answered ({'; '.join(errors)})")

    @staticmethod
    def _open(etcd: Etcd, endpoint: str) -> grpc.Channel:
        url = urlsplit(endpoint)
        target = url.netloc
        options = [("grpc.enable_http_proxy", 0)]  # straight to the member, as etcdctl (no proxy env)
        if url.scheme != "https" or etcd.tls is None:
            return grpc.insecure_channel(target, options=options)
        tls = etcd.tls
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.ca.read_bytes(),
                private_key=tls.key.read_bytes() if tls.cert else None,
                certificate_chain=tls.cert.read_bytes() if tls.cert else None)
        except OSError as err:
            raise EtcdError(f"etcd auth: cannot read {err.filename}: {err.strerror}") from None
        return grpc.secure_channel(target, credentials, options=options)

    def __enter__(self) -> "AuthSession":
        return self

    def __exit__(self, *_: object) -> None:
        self.channel.close()

    def _call(self, method: str) -> grpc.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(f"/etcdserverpb.Auth/{method}", request_serializer=_identity,
                                        response_deserializer=_identity)

    def user_names(self) -> list[str]:
        """Every etcd user's name (one request)."""
        self.requests += 1
        try:
            answer = self._call("UserList")(b"", timeout=self.timeout)
        except grpc.RpcError as err:
            raise EtcdError(f"etcd auth: listing users failed: {err.details()}") from None
        return _strings(answer, 2)  # AuthUserListResponse.users

    def batch(self, what: Sequence[tuple[str, tuple[str, bytes]]], tolerate: str = "") -> None:
        """Send every (description, request) of `what`, up to IN_FLIGHT at a time; an answer
        whose error names `tolerate` ("already exists", "not found") counts as done. Raises the
        first failure once all have answered (the others' work stays: a re-run finishes)."""
        failures: list[str] = []
        pending: list[tuple[str, Future]] = []

        def settle(upto: int) -> None:
            while len(pending) > upto:
                description, future = pending.pop(0)
                try:
                    future.result()
                except grpc.RpcError as err:
                    detail = err.details() or str(err.code())
                    if not (tolerate and tolerate in detail):
                        failures.append(f"{description} failed: {detail}")

        for description, (method, message) in what:
            settle(IN_FLIGHT - 1)
            self.requests += 1
            pending.append((description, self._call(method).future(message, timeout=self.timeout * 3)))
        settle(0)
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise EtcdError(f"etcd auth: {failures[0]}{more}")

