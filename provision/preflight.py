"""Checks a verb runs on the spec's provider before it touches state, so a spec the provider
refuses (or a provider whose library is missing) exits 2 with nothing created."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import UserError
from .providers import get_provider
from .spec import Spec

if TYPE_CHECKING:
    from .providers.base import Provider
    from .providers.pools import PoolProviders


def check_provider(spec: Spec, workdir: Path | None = None, log: Callable[[str], None] | None = None,
                   preflight: bool = True) -> "Provider | PoolProviders":
    """The provider with its spec checks (and, unless `preflight` is False, its checks of this
    machine and account) run; a missing cloud library is a UserError naming it."""
    try:
        from .providers.pools import PoolProviders, has_pool_providers
        if has_pool_providers(spec):  # cloud bursting: every pool's provider is checked too
            return PoolProviders(spec, workdir, log=log, preflight=preflight)
        return get_provider(spec, workdir, log=log, preflight=preflight)
    except ImportError as err:
        raise UserError(f"provider.name: provider {spec.provider.name} needs the Python module "
                        f"{err.name or err}, which is not installed here") from None
