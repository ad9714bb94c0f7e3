"""Configs too large for EC2 user data, served from S3: a private bucket per cluster and account
(`provision-<cluster>-<account id>`, public access blocked, tagged with the cluster), one
encrypted object per config, and a pre-signed https URL for the pointer config Ignition fetches
at first boot without credentials. Objects go once every host has booted; the bucket with `down`.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Protocol

# A pre-signed config URL serves one first boot, minutes after RunInstances: an hour, not SigV4's 7 days.
CONFIG_URL_SECONDS = 3600

Retry = Callable[[Callable[[], Any], str], Any]


class ClientFactory(Protocol):
    """The provider's client factory (`AWSCalls.client`): a boto3 client of `service` with the
    provider's retry config plus `config`, at `endpoint_url` when given."""

    def __call__(self, service: str, *, endpoint_url: str | None = None, **config: object) -> Any: ...


class S3ConfigServer:
    """The config bucket of cluster `cluster` in `region`. `client` makes the S3 and STS clients
    (the provider's factory: one retry config for every AWS client); `retry(call, what)` runs a
    call with the provider's error translation; `bucket_tags` is the bucket's TagSet."""

    def __init__(self, cluster: str, region: str, client: ClientFactory, retry: Retry, log: Callable[[str], None],
                 bucket_tags: list[dict[str, str]]):
        self.cluster = cluster
        self.region = region
        self.client = client
        self.retry = retry
        self.log = log
        self.bucket_tags = bucket_tags
        self._s3: Any = None
        self._bucket: str | None = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            # The bucket's regional endpoint: the global one answers new buckets outside us-east-1
            # with a redirect, after which a pre-signed URL's signature no longer matches.
            regional = None if custom else f"https://s3.{self.region}.amazonaws.com"
            self._s3 = self.client("s3", endpoint_url=regional, signature_version="s3v4",
                                   s3={"addressing_style": "path" if custom else "virtual"})
        return self._s3

    def bucket(self) -> str:
        """provision-<cluster>-<account id>: unique per account, found again on every run."""
        if self._bucket is None:
            account = self.retry(lambda: self.client("sts").get_caller_identity()["Account"], "GetCallerIdentity")
            self._bucket = f"provision-{self.cluster}-{account}"[:63]
        return self._bucket

    def key(self, name: str, config: bytes) -> str:
        return f"{self.cluster}/configs/{hashlib.sha256(config).hexdigest()[:16]}-{name}"

    def url(self, name: str, config: bytes) -> str:
        """A pre-signed https URL of a private S3 object on the bucket's regional endpoint, valid
        CONFIG_URL_SECONDS: Ignition fetches it at first boot without credentials (hosts made later
        get a new URL), and the pointer's sha512 pins the content."""
        url: str = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket(),
                                                                        "Key": self.key(name, config)},
                                                  ExpiresIn=CONFIG_URL_SECONDS)
        return url

    def serve(self, name: str, config: bytes, full_config: bytes) -> None:
        """Store `full_config` where `url(name, config)` points (the bucket made first if need be)."""
        bucket = self.bucket()
        from botocore.exceptions import ClientError

        def ensure_bucket() -> None:
            try:
                self.s3.head_bucket(Bucket=bucket)
                return
            except ClientError as err:
                if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
            params: dict[str, Any] = {"Bucket": bucket}
            if self.region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self.log(f"creating S3 bucket {bucket} for configs too large for user data")
            self.s3.create_bucket(**params)
            self.s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True})
            self.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": self.bucket_tags})
        self.retry(ensure_bucket, "create config bucket")
        self.retry(lambda: self.s3.put_object(Bucket=bucket, Key=self.key(name, config), Body=full_config,
                                              ServerSideEncryption="AES256"), f"upload config {name}")

    def forget(self) -> int:
        """Delete every served config of the cluster; returns how many were deleted."""
        from botocore.exceptions import ClientError
        bucket = self.bucket()

        def forget() -> int:
            try:
                listing = self.s3.list_objects_v2(Bucket=bucket, Prefix=f"{self.cluster}/configs/")
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
                    return 0
                raise
            items = listing.get("Contents", [])
            for item in items:
                self.s3.delete_object(Bucket=bucket, Key=item["Key"])
            return len(items)
        deleted: int = self.retry(forget, "delete served configs")
        return deleted

    def remove(self) -> None:
        """Delete the bucket with whatever it holds (`down`); nothing when it does not exist."""
        from botocore.exceptions import ClientError
        bucket = self.bucket()

        def remove() -> None:
            try:
                listing = self.s3.list_objects_v2(Bucket=bucket)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
                    return
                raise
            for item in listing.get("Contents", []):
                self.s3.delete_object(Bucket=bucket, Key=item["Key"])
            self.s3.delete_bucket(Bucket=bucket)
        self.retry(remove, "delete config bucket")
