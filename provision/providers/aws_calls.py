"""The plumbing under the AWS provider: boto3 clients with botocore's `adaptive` retry mode,
error translation, the look-first retry of creating calls, tags and the module's constants.

Every client (EC2, ELBv2, S3, STS) comes from `AWSCalls.client` and runs botocore's `adaptive`
retry mode: throttling, 5xx answers and dropped connections are retried by botocore, and its
client-side token bucket slows the calls down to the rate the service answers without
throttling (EC2 meters mutating calls in a bucket of 50 that refills at 5 a second). The one
exception is a creating call that is not idempotent by itself (no token EC2 dedupes, or an
endpoint that ignores it): botocore makes it once, and `_look_first` retries it after looking
whether the first try made the resource after all, so a lost answer never makes two.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import ActionError
from ..spec.model import AWSOptions
from .base import TAG_CLUSTER, Provider
from .retry import Backoff, call_with_retry

if TYPE_CHECKING:
    from botocore.client import BaseClient

TAG_BATCH = "provision:batch"      # ClientToken of the RunInstances that made the host
TAG_INDICES = "provision:indices"  # host indices of that batch, in launch order ("0-4,7")
TAG_ZONE_SLOT = "provision:zone-slot"  # a subnet's zone slot (provision.placement)

# Flatcar's publishing account (the owner filter keeps look-alike community images out).
FLATCAR_OWNER = "075585003325"
# EC2 caps one RunInstances at the RunInstances token bucket's burst.
MAX_BATCH = 1000
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
STATE_MAP = {"pending": "pending", "running": "running", "stopping": "stopped", "stopped": "stopped",
             "shutting-down": "terminated", "terminated": "terminated"}
# botocore's retry attempts per call (the first included), in its `adaptive` mode.
AWS_MAX_ATTEMPTS = 8
SSH_ADDRESS_ENV = "PROVISION_AWS_SSH_ADDRESS"  # public (default) | private
THROTTLING_CODES = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
                    "TooManyRequestsException", "SlowDown", "EC2ThrottledException",
                    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure"}


def compress_indices(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (launch order kept; fits a 256-character tag value)."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if start is not None and prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def expand_indices(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def aws_retryable(err: BaseException) -> str | None:
    """Why an error is worth another try (throttling, 5xx, a dropped connection), or None."""
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in THROTTLING_CODES or status == 429:
            return f"throttled ({code or status})"
        if status >= 500 and status != 501:  # 501 Not Implemented will not change on a retry
            return f"server error {status} ({code})"
        return None
    if isinstance(err, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return f"connection problem ({type(err).__name__})"
    return None


def client_config(max_attempts: int = AWS_MAX_ATTEMPTS, **extra: object) -> Any:
    """The botocore config of every client: `adaptive` retries (standard retries plus a token
    bucket that paces calls to the rate the service accepts), `max_attempts` tries a call."""
    from botocore.config import Config
    return Config(retries={"mode": "adaptive", "total_max_attempts": max_attempts},
                  user_agent_extra="provision", **extra)


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) or []}


def ssh_address_choice() -> str:
    """`PROVISION_AWS_SSH_ADDRESS` as given (default public); preflight refuses other values."""
    return os.environ.get(SSH_ADDRESS_ENV, "").strip().lower() or "public"


def ssh_over_private_addresses() -> bool:
    """Whether provision reaches hosts at their private addresses (see the module doc)."""
    return ssh_address_choice() == "private"


def credentials_problem() -> str | None:
    """Why boto3's standard chain finds no credentials here, or None when it finds some (found
    before anything is made, instead of at the first API call after PKI)."""
    import boto3
    from botocore.exceptions import BotoCoreError
    try:
        credentials = boto3.session.Session().get_credentials()
    except BotoCoreError as err:  # e.g. AWS_PROFILE names a profile the config lacks
        return f"AWS credentials cannot be read: {err}"
    if credentials is None:
        return ("no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "~/.aws/credentials, or an instance profile)")
    return None


class AWSCalls(Provider):
    """Clients, retries and error translation shared by the AWS provider's parts."""

    options: AWSOptions  # the spec's provider options, typed

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()  # only for `_look_first`: botocore retries every other call
        self.max_attempts = AWS_MAX_ATTEMPTS
        self._looking_first = False
        self._single_attempt: dict[str, Any] = {}
        self._client = None
        self._elbv2: Any = None

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def ec2(self):
        if self._looking_first:
            return self._single_attempt_client("ec2")
        if self._client is None:
            self._client = self._make_client("ec2", self.max_attempts)
        return self._client

    def client(self, service: str, *, endpoint_url: str | None = None, **config: object) -> BaseClient:
        """A new boto3 client of `service` in the provider's region: `client_config` (adaptive
        retries, the provider's attempt budget, timeouts) plus `config` (botocore Config
        options), retries reported in the log. Every AWS client of the provider (EC2, ELBv2, S3,
        STS) is made here; `endpoint_url` overrides the endpoint boto3 would pick."""
        return self._make_client(service, self.max_attempts, endpoint_url=endpoint_url, **config)

    def _make_client(self, service: str, attempts: int, *, endpoint_url: str | None = None, **config: object) -> BaseClient:
        import boto3
        options: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 60, **config}
        client = boto3.session.Session().client(service, region_name=self.options.region, endpoint_url=endpoint_url,
                                                config=client_config(attempts, **options))
        client.meta.events.register("needs-retry", self._log_retry)
        return client

    def _elbv2_client(self) -> BaseClient:
        """The ELBv2 client the API load balancer uses (single-attempt while looking first)."""
        if self._looking_first:
            return self._single_attempt_client("elbv2")
        if self._elbv2 is None:
            self._elbv2 = self._make_client("elbv2", self.max_attempts)
        return self._elbv2

    def _single_attempt_client(self, service: str):
        if service not in self._single_attempt:
            self._single_attempt[service] = self._make_client(service, 1)
        return self._single_attempt[service]

    def _log_retry(self, response=None, attempts: int = 0, caught_exception=None, operation=None, **_: object) -> None:
        """Say when botocore is about to retry a call (it decides; this only reports)."""
        if attempts >= self.max_attempts or self._looking_first:
            return
        reason = None
        if caught_exception is not None:
            reason = aws_retryable(caught_exception)
        elif response is not None:
            http, parsed = response
            code = (parsed or {}).get("Error", {}).get("Code", "")
            if code in THROTTLING_CODES or http.status_code == 429:
                reason = f"throttled ({code or http.status_code})"
            elif http.status_code >= 500 and http.status_code != 501:
                reason = f"server error {http.status_code} ({code})"
        if reason:
            name = getattr(operation, "name", "call")
            self.log(f"aws {name}: {reason}; botocore retries (attempt {attempts + 1}/{self.max_attempts}, adaptive)")

    def _look_first(self, attempt: Callable[[], Any], what: str) -> Any:
        """A creating call botocore must not repeat blindly: `attempt` looks for what an earlier
        try made before it creates; each try's calls are made once, and a throttled or lost one
        is tried again here with backoff."""
        self._looking_first = True
        try:
            return self._retry(lambda: call_with_retry(attempt, retryable=aws_retryable, what=f"aws {what}",
                                                       log=self.log, backoff=self.backoff), what)
        finally:
            self._looking_first = False

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        """Run `call` (botocore retries its calls); errors become ActionError."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        try:
            return call()
        except NoCredentialsError:
            raise ActionError("aws: no credentials found in the standard AWS chain (AWS_ACCESS_KEY_ID/"
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance role)") from None
        except ClientError as err:
            error = err.response.get("Error", {})
            raise ActionError(f"aws {what}: {error.get('Code', 'error')}: {error.get('Message', err)}") from None
        except BotoCoreError as err:
            raise ActionError(f"aws {what}: {err}") from None

    def _call(self, operation: str, **params: object) -> Any:
        return self._retry(lambda: getattr(self.ec2, operation)(**params), operation)

    def _paginate(self, operation: str, key: str, **params: object) -> list[dict[str, Any]]:
        def pages() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            for page in self.ec2.get_paginator(operation).paginate(**params):
                items.extend(page.get(key, []))
            return items
        return self._retry(pages, operation)

    def _cluster_filter(self) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.spec.name]}]

    def _tag_spec(self, resource_type: str, extra: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        tags = {TAG_CLUSTER: self.spec.name, "Name": self.spec.name, **(extra or {})}
        return [{"ResourceType": resource_type, "Tags": tag_list(tags)}]

    def _find_or_create(self, what: str, find: Callable[[], str | None], create: Callable[[], str]) -> str:
        """Look before every (re)try of a creating call, so a lost answer never duplicates."""
        def attempt() -> str:
            found = find()
            if found:
                return found
            self.log(f"creating {what}")
            return create()
        return self._look_first(attempt, f"create {what}")
