"""The cluster's etcd, in one place.

- `keys`: the key layout (who writes where);
- `client`: `Etcd`, the one client (the real etcdctl, v3 API) with one client identity;
- `cluster`: members from state, TLS material from state's PKI, the route over SSH;
- `auth`: users, roles and `auth enable`, converged;
- `lock`: the lease lock;
- `v2`: the v2 API (python-etcd), for CoreOS-era flannel and fleet and the etcd state backend.

(`import etcd` anywhere in this package is python-etcd, the v2 client library.)
"""
