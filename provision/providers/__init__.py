"""Providers: one module per cloud behind `base.Provider`, registered in one table.

The table maps the spec's `provider.name` to "module:Class"; modules import lazily so that
`validate` and `plan` need no cloud library.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import UserError
if TYPE_CHECKING:  # annotations only: the CLI's start-up lists the providers
    from ..spec import Spec
from .base import HostRecord, Provider, UserDataLimit, compare

PROVIDERS: dict[str, str] = {
    "local": "provision.providers.local:LocalProvider",
    "aws": "provision.providers.aws:AWSProvider",
    "openstack": "provision.providers.openstack:OpenStackProvider",
    "libcloud": "provision.providers.libcloud_driver:LibcloudProvider",
    "vagrant": "provision.providers.vagrant:VagrantProvider",
}


def provider_class(name: str) -> type[Provider]:
    if name not in PROVIDERS:
        raise UserError(f"provider.name: unknown provider {name!r} (known: {', '.join(PROVIDERS)})")
    module_name, cls_name = PROVIDERS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def get_provider(spec: Spec, workdir: Path | None = None, log: Callable[[str], None] | None = None,
                 preflight: bool = False) -> Provider:
    """The provider the spec names, with its spec checks run, and with `preflight` its checks
    of this machine and account too (exit 2 on a problem)."""
    provider = provider_class(spec.provider.name)(spec, workdir=workdir, log=log)
    problems = provider.check()
    if spec.os.config not in provider.config_formats:
        problems.append(("os.config", f"provider {spec.provider.name} boots hosts only from "
                                      f"{' or '.join(provider.config_formats)}, not {spec.os.config} "
                                      "(use a cloud provider such as aws or openstack for cloud-config)"))
    if preflight and not problems:
        problems = provider.preflight()
    if problems:
        raise UserError([f"{path}: {message}" for path, message in problems])
    return provider


__all__ = ["PROVIDERS", "HostRecord", "Provider", "UserDataLimit", "compare", "get_provider", "provider_class"]
