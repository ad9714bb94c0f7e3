"""Headroom: keep spare capacity in one worker pool by adding and removing hosts.

`policy` decides (pure functions), `observe` reads load (etcd keys or the Kubernetes API),
`reconcile` acts (one reconciler at a time, drain before destroy) and `simulate` replays
load traces through the policies.
"""
