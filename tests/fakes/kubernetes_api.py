"""A small local Kubernetes API server for tests: node and pod list responses shaped like
the real API (v1 NodeList / PodList), `fieldSelector=spec.nodeName=X` on pods, and node
PATCH (cordon). Driven by the real `kubernetes` client through a kubeconfig it writes.

Only what the Kubernetes API server cannot do here (it cannot run on these machines) is
faked; the client, its HTTP, its deserialisation and quantity parsing are real.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "test-token-not-secret"


def node(name: str, cpu: str = "4", memory: str = "8Gi", ready: str = "True", labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]}}


def pod(name: str, node_name: str | None, cpu: str = "500m", memory: str = "512Mi", phase: str | None = None,
        namespace: str = "default", daemonset: bool = False) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"}
    if daemonset:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "ds-uid"}]
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox",
                                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase or ("Running" if node_name else "Pending")}}


class FakeKubernetesAPI:
    """`with FakeKubernetesAPI(tmp_path) as api:` ... `api.kubeconfig` is a kubeconfig path.

    `nodes` and `pods` are plain API objects (dicts) the test edits. `on_cordon` is called
    with the node name after a cordon, e.g. to move its pods away as evictions would."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.nodes: list[dict] = []
        self.pods: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.on_cordon = None
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "FakeKubernetesAPI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, status(401, "Unauthorized", "Unauthorized"))
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
                        return self._send(200, listing("NodeList", fake.nodes))
                    if url.path == "/api/v1/pods":
                        items = fake.pods
                        for selector in query.get("fieldSelector", []):
                            key, _, value = selector.partition("=")
                            if key != "spec.nodeName":
                                return self._send(400, status(400, "BadRequest", f"field label not supported: {key}"))
                            items = [p for p in items if p["spec"].get("nodeName") == value]
                        return self._send(200, listing("PodList", items))
                self._send(404, status(404, "NotFound", f"the server could not find {url.path}"))

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
                        return self._send(404, status(404, "NotFound", f'nodes "{name}" not found'))
                    match[0]["spec"].update(body.get("spec", {}))
                    result = match[0]
                if body.get("spec", {}).get("unschedulable") and fake.on_cordon:
                    fake.on_cordon(name)
                self._send(200, result)

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

    def move_pods_off(self, node_name: str) -> None:
        """What evictions and the scheduler would do: pods leave a cordoned node."""
        with self.lock:
            self.pods = [p for p in self.pods if p["spec"].get("nodeName") != node_name
                         or any(o["kind"] == "DaemonSet" for o in p["metadata"].get("ownerReferences", []))]


def listing(kind: str, items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}


def status(code: int, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message, "reason": reason,
            "code": code}
