"""pyinfra inventory of a cluster provision made, read from its state at run time.

    PROVISION_SPEC=cluster.yaml pyinfra inventories/cluster.py my_deploy.py
    PROVISION_SPEC=cluster.yaml pyinfra inventories/cluster.py exec -- uptime

Groups: `masters`, `workers`, `etcd` (hosts carrying an etcd member) and `pool_<pool>` (a `-`
in a pool name becomes `_`); pyinfra adds `all` and `cluster`. Each host is reached with
provision's SSH key, the spec's `ssh.user` and the cluster's pinned host keys.
$PROVISION_STATE_DIR picks the state directory as it does for every `provision` verb.
"""
from pyinfra.api.exceptions import PyinfraError as _PyinfraError

from provision.errors import ProvisionError as _ProvisionError
from provision.inventory import inventory_groups as _inventory_groups

try:
    globals().update(_inventory_groups())
except _ProvisionError as _err:  # a clear message, not a traceback from inside the inventory
    raise _PyinfraError(str(_err)) from None
