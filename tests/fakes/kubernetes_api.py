"""A small local Kubernetes API server for tests: node and pod list responses shaped like
the real API (v1 NodeList / PodList), `fieldSelector=spec.nodeName=X` on pods, node PATCH
(cordon: only marks the node, moves nothing, as the real API server), and the Eviction API
(POST .../pods/NAME/eviction with a policy/v1 Eviction) honouring PodDisruptionBudgets: an
eviction that would leave fewer healthy pods than a budget's minAvailable (or more missing
than its maxUnavailable) is refused with 429 TooManyRequests, as the real API does. Driven by
the real `kubernetes` client through a kubeconfig it writes.

Only what the Kubernetes API server cannot do here (it cannot run on these machines) is
faked; the client, its HTTP, its deserialisation and quantity parsing are real.
"""
from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .json_http import JSONHandler

TOKEN = "test-token-not-secret"


def node(name: str, cpu: str = "4", memory: str = "8Gi", ready: str = "True", labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]}}


def pod(name: str, node_name: str | None, cpu: str = "500m", memory: str = "512Mi", phase: str | None = None,
        namespace: str = "default", daemonset: bool = False, labels: dict | None = None,
        node_selector: dict | None = None, unschedulable: bool = True) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                            "labels": labels or {}}
    if daemonset:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "ds-uid"}]
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox",
                                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    if node_name:
        spec["nodeName"] = node_name
    if node_selector:
        spec["nodeSelector"] = node_selector
    status: dict[str, Any] = {"phase": phase or ("Running" if node_name else "Pending")}
    if not node_name and unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/3 nodes are available: 3 Insufficient cpu."}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def pdb(name: str, match_labels: dict, min_available: int | None = None, max_unavailable: int | None = None,
        namespace: str = "default") -> dict:
    """A policy/v1 PodDisruptionBudget (integer minAvailable or maxUnavailable)."""
    spec: dict[str, Any] = {"selector": {"matchLabels": match_labels}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


class FakeKubernetesAPI:
    """`with FakeKubernetesAPI(tmp_path) as api:` ... `api.kubeconfig` is a kubeconfig path.

    `nodes`, `pods` and `pdbs` are plain API objects (dicts) the test edits; `evictions` lists
    (namespace/name, HTTP code) of every eviction asked for."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.nodes: list[dict] = []
        self.pods: list[dict] = []
        self.pdbs: list[dict] = []
        self.evictions: list[tuple[str, int]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "FakeKubernetesAPI":
        fake = self

        class Handler(JSONHandler):
            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.answer(401, status(401, "Unauthorized", "Unauthorized"))
                    return False
                return True

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append(("GET", url.path))
                if not self._authorized():
                    return
                query = parse_qs(url.query)
                with fake.lock:
                    if url.path == "/api/v1/nodes":
                        return self.answer(200, listing("NodeList", fake.nodes))
                    if url.path == "/api/v1/pods":
                        items = fake.pods
                        for selector in query.get("fieldSelector", []):
                            key, _, value = selector.partition("=")
                            if key != "spec.nodeName":
                                return self.answer(400, status(400, "BadRequest", f"field label not supported: {key}"))
                            items = [p for p in items if p["spec"].get("nodeName") == value]
                        return self.answer(200, listing("PodList", items))
                self.answer(404, status(404, "NotFound", f"the server could not find {url.path}"))

            def do_PATCH(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append(("PATCH", url.path))
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prefix = "/api/v1/nodes/"
                name = url.path[len(prefix):] if url.path.startswith(prefix) else None
                with fake.lock:
                    match = [n for n in fake.nodes if n["metadata"]["name"] == name]
                    if not match:
                        return self.answer(404, status(404, "NotFound", f'nodes "{name}" not found'))
                    match[0]["spec"].update(body.get("spec", {}))
                    result = match[0]
                self.answer(200, result)

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append(("POST", url.path))
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                parts = url.path.strip("/").split("/")
                # /api/v1/namespaces/NS/pods/NAME/eviction
                if len(parts) != 7 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods" \
                        or parts[6] != "eviction":
                    return self.answer(404, status(404, "NotFound", f"the server could not find {url.path}"))
                namespace, name = parts[3], parts[5]
                if body.get("kind") != "Eviction" or body.get("metadata", {}).get("name") != name:
                    return self.answer(400, status(400, "BadRequest", "name in URL does not match name in Eviction"))
                code, answer = fake.evict(namespace, name)
                fake.evictions.append((f"{namespace}/{name}", code))
                self.answer(code, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = self.directory / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
        return self

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def evict(self, namespace: str, name: str) -> tuple[int, dict]:
        """The API server's eviction: 404 for no such pod, 429 when a budget covering the pod
        would be violated, else the pod is deleted (201, a Success Status)."""
        with self.lock:
            target = [p for p in self.pods if p["metadata"]["namespace"] == namespace
                      and p["metadata"]["name"] == name]
            if not target:
                return 404, status(404, "NotFound", f'pods "{name}" not found')
            labels = target[0]["metadata"].get("labels") or {}
            for budget in self.pdbs:
                if budget["metadata"]["namespace"] != namespace:
                    continue
                selector = budget["spec"]["selector"]["matchLabels"]
                if any(labels.get(k) != v for k, v in selector.items()):
                    continue
                covered = [p for p in self.pods if p["metadata"]["namespace"] == namespace
                           and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
                healthy = sum(1 for p in covered if p["status"].get("phase") == "Running")
                if "minAvailable" in budget["spec"]:
                    allowed = healthy - budget["spec"]["minAvailable"]
                else:
                    allowed = budget["spec"]["maxUnavailable"] - (len(covered) - healthy)
                if allowed <= 0:
                    return 429, {**status(429, "TooManyRequests", "Cannot evict pod as it would violate the "
                                                                  "pod's disruption budget."),
                                 "details": {"causes": [{"reason": "DisruptionBudget", "message":
                                             f"The disruption budget {budget['metadata']['name']} needs "
                                             f"{healthy - allowed} healthy pods and has {healthy} currently"}]}}
            self.pods.remove(target[0])
        return 201, {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201, "metadata": {}}


def listing(kind: str, items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}


def status(code: int, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message, "reason": reason,
            "code": code}
