"""A small OpenStack stand-in over HTTP: Keystone v3 tokens with a catalog, Nova servers,
flavors and key pairs, Glance images, Neutron networks, subnets and security groups.

Only the calls provision makes, with JSON shaped like the API reference, so the real
openstacksdk (and keystoneauth) can drive it. Real OpenStack cannot run on these machines.
Faults can be queued per operation: `fail` answers 409 with a Nova-style error; `drop` does the
work and closes the connection without an answer; `throttle` answers 429.
"""
from __future__ import annotations

import collections
import json
import re
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-token-" + uuid.uuid4().hex


class OpenStackAPI:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.faults: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self.unknown: list[str] = []
        self.servers: dict[str, dict] = {}
        self.keypairs: dict[str, dict] = {}
        self.networks: dict[str, dict] = {}
        self.subnets: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.flavors = {f"fl-{n}": {"id": f"fl-{n}", "name": n, "vcpus": c, "ram": r, "disk": 20}
                        for n, c, r in (("m1.small", 1, 2048), ("m1.medium", 2, 4096), ("m1.large", 4, 8192))}
        self.images = {"img-flatcar": {"id": "img-flatcar", "name": "flatcar-stable", "status": "active",
                                       "visibility": "public"}}
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                url = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                path = url.path.rstrip("/") or "/"
                op, status, data, headers = api.route(self.command, path, query, body, self.headers)
                fault = None
                with api.lock:
                    if op:
                        api.calls[op] += 1
                        fault = api.faults[op].popleft() if api.faults.get(op) else None
                if fault == "fail":
                    status, data, headers = 409, {"conflictingRequest": {"code": 409, "message": "injected failure"}}, {}
                elif fault == "throttle":
                    status, data, headers = 429, {"overLimit": {"code": 429, "message": "injected throttle"}}, {}
                else:
                    op2, status, data, headers = api.route(self.command, path, query, body, self.headers, act=True)
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                raw = b"" if data is None else json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # -- set-up ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def clouds_yaml(self, cloud: str) -> str:
        return (f"clouds:\n  {cloud}:\n    auth:\n      auth_url: {self.url}/identity/v3\n"
                "      username: demo\n      password: secret\n      project_name: demo\n"
                "      user_domain_name: Default\n      project_domain_name: Default\n"
                "    region_name: RegionOne\n    identity_api_version: 3\n")

    def inject(self, op: str, *faults: str) -> None:
        with self.lock:
            self.faults[op].extend(faults)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routing -----------------------------------------------------------------------------
    def route(self, method, path, query, body, headers, act=False):
        """(operation name for counting/faults, status, JSON, headers). With act=False only the
        operation is named (so a fault can replace the answer before anything changes)."""
        for pattern, meth, op, handler in self.ROUTES:
            m = re.fullmatch(pattern, path)
            if m and meth == method:
                if not act:
                    return op, 0, None, {}
                with self.lock:
                    status, data, extra = handler(self, query, body, *m.groups())
                return op, status, data, extra
        if act:
            self.unknown.append(f"{method} {path}")
            return None, 404, {"itemNotFound": {"code": 404, "message": f"no route {method} {path}"}}, {}
        return None, 0, None, {}

    def _version_doc(self, service):
        base = self.url
        docs = {
            "identity": {"versions": {"values": [{"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                                                   "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
                                                   "media-types": []}]}},
            "compute": {"versions": [{"id": "v2.1", "status": "CURRENT", "version": "2.79", "min_version": "2.1",
                                      "updated": "2013-07-23T11:33:21Z",
                                      "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}]}]},
            "network": {"versions": [{"id": "v2.0", "status": "CURRENT",
                                      "links": [{"rel": "self", "href": f"{base}/network/v2.0/"}]}]},
            "image": {"versions": [{"id": "v2.9", "status": "CURRENT",
                                    "links": [{"rel": "self", "href": f"{base}/image/v2/"}]}]},
        }
        return 200, docs[service], {}

    def _token(self, query, body):
        base = self.url
        catalog = [{"type": t, "name": n, "id": n, "endpoints": [
            {"interface": i, "region": "RegionOne", "region_id": "RegionOne", "url": u, "id": f"{n}-{i}"}
            for i in ("public", "internal", "admin")]}
            for t, n, u in (("identity", "keystone", f"{base}/identity"), ("compute", "nova", f"{base}/compute/v2.1"),
                            ("network", "neutron", f"{base}/network"), ("image", "glance", f"{base}/image"))]
        token = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                           "issued_at": "2026-01-01T00:00:00.000000Z",
                           "user": {"id": "u1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
                           "project": {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
                           "roles": [{"id": "r1", "name": "member"}], "catalog": catalog}}
        return 201, token, {"X-Subject-Token": TOKEN}

    # Nova
    def _server_view(self, s):
        return s

    def _list_servers(self, query, body):
        servers = list(self.servers.values())
        if "name" in query:
            rx = re.compile(query["name"])
            servers = [s for s in servers if rx.search(s["name"])]
        for s in servers:  # servers come up on the first look after creation
            s["status"] = "ACTIVE"
            s["OS-EXT-STS:vm_state"] = "active"
        return 200, {"servers": [self._server_view(s) for s in servers]}, {}

    def _create_server(self, query, body):
        b = body["server"]
        sid = str(uuid.uuid4())
        net = (b.get("networks") or [{}])[0]
        network = self.networks.get(net.get("uuid"), {"name": "default"})
        address = net.get("fixed_ip") or f"10.0.0.{len(self.servers) + 10}"
        self.servers[sid] = {
            "id": sid, "name": b["name"], "status": "BUILD", "metadata": b.get("metadata", {}),
            "flavor": {"id": b.get("flavorRef")}, "image": {"id": b.get("imageRef")}, "key_name": b.get("key_name"),
            "user_data": b.get("user_data"), "security_groups": b.get("security_groups", []),
            "addresses": {network["name"]: [{"addr": address, "version": 4, "OS-EXT-IPS:type": "fixed"}]},
            "links": [], "tenant_id": "p1", "user_id": "u1", "created": "2026-01-01T00:00:00Z",
        }
        return 202, {"server": {"id": sid, "links": [], "adminPass": "x"}}, {}

    def _get_server(self, query, body, sid):
        if sid not in self.servers:
            return 404, {"itemNotFound": {"code": 404, "message": "Instance could not be found"}}, {}
        return 200, {"server": self.servers[sid]}, {}

    def _delete_server(self, query, body, sid):
        if self.servers.pop(sid, None) is None:
            return 404, {"itemNotFound": {"code": 404, "message": "Instance could not be found"}}, {}
        return 204, None, {}

    def _flavors(self, query, body):
        return 200, {"flavors": list(self.flavors.values())}, {}

    def _flavor(self, query, body, fid):
        f = self.flavors.get(fid)
        return (200, {"flavor": f}, {}) if f else (404, {"itemNotFound": {"code": 404, "message": "no flavor"}}, {})

    def _keypairs(self, query, body):
        return 200, {"keypairs": [{"keypair": k} for k in self.keypairs.values()]}, {}

    def _keypair(self, query, body, name):
        k = self.keypairs.get(name)
        return (200, {"keypair": k}, {}) if k else (404, {"itemNotFound": {"code": 404, "message": "no keypair"}}, {})

    def _create_keypair(self, query, body):
        k = body["keypair"]
        if k["name"] in self.keypairs:
            return 409, {"conflictingRequest": {"code": 409, "message": "Key pair already exists"}}, {}
        self.keypairs[k["name"]] = {"name": k["name"], "public_key": k.get("public_key"), "fingerprint": "fp",
                                    "type": "ssh"}
        return 200, {"keypair": self.keypairs[k["name"]]}, {}

    def _delete_keypair(self, query, body, name):
        return (204, None, {}) if self.keypairs.pop(name, None) else (404, {"itemNotFound": {"code": 404}}, {})

    # Glance
    def _images(self, query, body):
        images = [i for i in self.images.values() if "name" not in query or i["name"] == query["name"]]
        return 200, {"images": images}, {}

    def _image(self, query, body, iid):
        i = self.images.get(iid)
        return (200, i, {}) if i else (404, {"message": "no image"}, {})

    # Neutron
    def _collection(self, store, key, query):
        items = [x for x in store.values() if all(str(x.get(k)) == v for k, v in query.items()
                                                   if k not in ("fields", "limit", "marker"))]
        return 200, {key: items}, {}

    def _item(self, store, key, iid):
        x = store.get(iid)
        return (200, {key: x}, {}) if x else (404, {"NeutronError": {"type": "NotFound", "message": "not found"}}, {})

    def _create(self, store, key, body, **defaults):
        item = {"id": str(uuid.uuid4()), **defaults, **body[key]}
        store[item["id"]] = item
        return 201, {key: item}, {}

    def _delete(self, store, iid):
        return (204, None, {}) if store.pop(iid, None) else (404, {"NeutronError": {"type": "NotFound"}}, {})

    def _create_group(self, query, body):
        status, data, h = self._create(self.groups, "security_group", body, security_group_rules=[], tenant_id="p1")
        return status, data, h

    def _list_rules(self, query, body):
        return self._collection(self.rules, "security_group_rules", query)

    def _create_rule(self, query, body):
        r = body["security_group_rule"]
        for existing in self.rules.values():
            if all(existing.get(k) == r.get(k) for k in ("security_group_id", "protocol", "port_range_min",
                                                         "port_range_max", "remote_ip_prefix", "remote_group_id")):
                return 409, {"NeutronError": {"type": "SecurityGroupRuleExists", "message": "exists"}}, {}
        return self._create(self.rules, "security_group_rule", body, remote_ip_prefix=None, remote_group_id=None)

    ROUTES = [
        (r"/identity", "GET", None, lambda s, q, b: s._version_doc("identity")),
        (r"/identity/v3", "GET", None, lambda s, q, b: (200, {"version": s._version_doc("identity")[1]["versions"]["values"][0]}, {})),
        (r"/identity/v3/auth/tokens", "POST", "token", _token),
        (r"/compute", "GET", None, lambda s, q, b: s._version_doc("compute")),
        (r"/compute/v2.1", "GET", None, lambda s, q, b: (200, {"version": s._version_doc("compute")[1]["versions"][0]}, {})),
        (r"/compute/v2.1/servers/detail", "GET", "list_servers", _list_servers),
        (r"/compute/v2.1/servers", "POST", "create_server", _create_server),
        (r"/compute/v2.1/servers/([^/]+)", "GET", "get_server", _get_server),
        (r"/compute/v2.1/servers/([^/]+)", "DELETE", "delete_server", _delete_server),
        (r"/compute/v2.1/flavors/detail", "GET", "list_flavors", _flavors),
        (r"/compute/v2.1/flavors/([^/]+)", "GET", "get_flavor", _flavor),
        (r"/compute/v2.1/os-keypairs", "GET", "list_keypairs", _keypairs),
        (r"/compute/v2.1/os-keypairs", "POST", "create_keypair", _create_keypair),
        (r"/compute/v2.1/os-keypairs/([^/]+)", "GET", "get_keypair", _keypair),
        (r"/compute/v2.1/os-keypairs/([^/]+)", "DELETE", "delete_keypair", _delete_keypair),
        (r"/image", "GET", None, lambda s, q, b: s._version_doc("image")),
        (r"/image/v2/images", "GET", "list_images", _images),
        (r"/image/v2/images/([^/]+)", "GET", "get_image", _image),
        (r"/network", "GET", None, lambda s, q, b: s._version_doc("network")),
        (r"/network/v2.0/networks", "GET", "list_networks", lambda s, q, b: s._collection(s.networks, "networks", q)),
        (r"/network/v2.0/networks", "POST", "create_network",
         lambda s, q, b: s._create(s.networks, "network", b, status="ACTIVE", subnets=[], tenant_id="p1")),
        (r"/network/v2.0/networks/([^/]+)", "GET", "get_network", lambda s, q, b, i: s._item(s.networks, "network", i)),
        (r"/network/v2.0/networks/([^/]+)", "DELETE", "delete_network", lambda s, q, b, i: s._delete(s.networks, i)),
        (r"/network/v2.0/subnets", "GET", "list_subnets", lambda s, q, b: s._collection(s.subnets, "subnets", q)),
        (r"/network/v2.0/subnets", "POST", "create_subnet", lambda s, q, b: s._create(s.subnets, "subnet", b)),
        (r"/network/v2.0/subnets/([^/]+)", "DELETE", "delete_subnet", lambda s, q, b, i: s._delete(s.subnets, i)),
        (r"/network/v2.0/security-groups", "GET", "list_security_groups",
         lambda s, q, b: s._collection(s.groups, "security_groups", q)),
        (r"/network/v2.0/security-groups", "POST", "create_security_group", _create_group),
        (r"/network/v2.0/security-groups/([^/]+)", "GET", "get_security_group",
         lambda s, q, b, i: s._item(s.groups, "security_group", i)),
        (r"/network/v2.0/security-groups/([^/]+)", "DELETE", "delete_security_group",
         lambda s, q, b, i: s._delete(s.groups, i)),
        (r"/network/v2.0/security-group-rules", "GET", "list_security_group_rules", _list_rules),
        (r"/network/v2.0/security-group-rules", "POST", "create_security_group_rule", _create_rule),
    ]
