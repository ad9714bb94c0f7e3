"""An OpenStack stand-in over HTTP: Keystone v3 tokens with a catalog, Nova (servers, flavors,
key pairs, server groups, availability zones), Glance images and Neutron (networks, subnets,
ports, routers, floating IPs, security groups, tags).

Real OpenStack cannot run on these machines; this answers the calls provision makes with JSON
shaped like the API reference, so the real openstacksdk (and keystoneauth) drives it. It is as
unkind as the clouds in what matters to provision:

- servers are BUILD for a few looks, then ACTIVE, or ERROR with a `fault` when a boot failure
  is queued (`fail_boot`); deleting takes a few looks (task_state `deleting`, then
  SOFT_DELETED when `soft_delete` is on), and the server's ports live until it is gone;
- Nova validates what Nova validates: user_data is base64 and at most 65,535 characters, key
  pair names exist, key material is one OpenSSH key, flavors and images exist, security groups
  and availability zones exist, server group policies are known, the instance quota;
- Neutron validates fixed IPs (inside a subnet of the network, not taken), allocates other
  addresses at random inside the allocation pools, refuses to delete a network, subnet,
  security group or router still in use (409 ...InUse), needs a router from the port's subnet to
  an external network before a floating IP can point at the port;
- errors come in each service's shape: Nova `{"badRequest": {"code", "message"}}`, Neutron
  `{"NeutronError": {"type", "message", "detail"}}`.

Faults can be queued per operation: `fail` answers 409 in the service's shape; `in_use` answers
Neutron's 409 `<Kind>InUse`; `drop` does the work and closes the connection without an answer;
`throttle` answers 429.
"""
from __future__ import annotations

import base64
import binascii
import collections
import ipaddress
import json
import random
import re
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-token-" + uuid.uuid4().hex
USER_DATA_MAX = 65535  # Nova: characters of base64
SERVER_GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
NOVA_ERROR_KEYS = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
                   413: "overLimit", 429: "overLimit", 500: "computeFault"}
SSH_KEY_RE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\n]*)?$")


class Reply(Exception):
    """An error answer, raised from a handler."""

    def __init__(self, status: int, body: dict):
        super().__init__(status)
        self.status, self.body = status, body


def nova_error(status: int, message: str) -> Reply:
    return Reply(status, {NOVA_ERROR_KEYS.get(status, "computeFault"): {"code": status, "message": message}})


def neutron_error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


class OpenStackAPI:
    def __init__(self, build_looks: int = 2, delete_looks: int = 2, soft_delete: bool = False,
                 instance_quota: int = 50, seed: int = 17, octavia: bool = False):
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.faults: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self.unknown: list[str] = []
        self.requests: list[tuple[str, str, dict]] = []  # (op, path, body) of every change (not tokens)
        self.build_looks = build_looks  # looks at a server before BUILD ends
        self.delete_looks = delete_looks  # looks at a deleting server before it goes (or soft-deletes)
        self.soft_delete = soft_delete  # Nova's reclaim_instance_interval > 0
        self.instance_quota = instance_quota
        # Octavia (the load-balancer service) in the catalog: most clouds' optional extra
        self.octavia = octavia
        self.load_balancers: dict[str, dict] = {}
        self.listeners: dict[str, dict] = {}
        self.pools: dict[str, dict] = {}
        self.members: dict[str, dict] = {}
        self.health_monitors: dict[str, dict] = {}
        self.random = random.Random(seed)
        self.boot_failures: collections.deque[str] = collections.deque()  # name regexes that boot to ERROR
        self.servers: dict[str, dict] = {}
        self.keypairs: dict[str, dict] = {}
        self.server_groups: dict[str, dict] = {}
        self.zones = ["nova", "az-1", "az-2"]
        self.networks: dict[str, dict] = {}
        self.subnets: dict[str, dict] = {}
        self.ports: dict[str, dict] = {}
        self.routers: dict[str, dict] = {}
        self.floating_ips: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.flavors = {f"fl-{n}": {"id": f"fl-{n}", "name": n, "vcpus": c, "ram": r, "disk": 20,
                                    "links": [], "OS-FLV-EXT-DATA:ephemeral": 0, "os-flavor-access:is_public": True}
                        for n, c, r in (("m1.small", 1, 2048), ("m1.medium", 2, 4096), ("m1.large", 4, 8192))}
        self.images = {"img-flatcar": self._image_doc("img-flatcar", "flatcar-stable", "2026-01-01T00:00:00Z")}
        # The cloud's external network (the operator's), with a subnet floating IPs come from.
        self.public = self.add_network("public", "203.0.113.0/24", external=True, project="admin")
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
                op, status, data, headers = api.route(self.command, path, query, body)
                fault = None
                with api.lock:
                    if op:
                        api.calls[op] += 1
                        fault = api.faults[op].popleft() if api.faults.get(op) else None
                neutron = path.startswith("/network")
                if fault == "fail":
                    status, headers = 409, {}
                    data = (neutron_error(409, "Conflict", "injected failure") if neutron
                            else nova_error(409, "injected failure")).body
                elif fault == "in_use":  # Neutron: still used by a port that is going away
                    status, headers = 409, {}
                    kind = "".join(w.title() for w in op.split("_")[1:]) or "Resource"
                    data = neutron_error(409, f"{kind}InUse", f"Unable to complete operation on {kind} "
                                                              "(injected): it is still in use.").body
                elif fault == "throttle":
                    status, headers = 429, {}
                    data = (neutron_error(429, "OverQuota", "injected throttle") if neutron
                            else nova_error(429, "injected throttle")).body
                else:
                    op2, status, data, headers = api.route(self.command, path, query, body, act=True)
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

    def fail_boot(self, name_regex: str) -> None:
        """The next server created whose name matches boots to ERROR ("No valid host was found")."""
        with self.lock:
            self.boot_failures.append(name_regex)

    def add_network(self, name: str, cidr: str, external: bool = False, project: str = "p1",
                    allocation_pools: list[dict] | None = None) -> dict:
        """A network (with one subnet) that exists before provision runs: the operator's."""
        net = {"id": str(uuid.uuid4()), "name": name, "status": "ACTIVE", "subnets": [], "tags": [],
               "router:external": external, "shared": external, "admin_state_up": True,
               "tenant_id": project, "project_id": project, "description": ""}
        self.networks[net["id"]] = net
        self._make_subnet({"network_id": net["id"], "cidr": cidr, "ip_version": 4, "name": f"{name}-subnet",
                           "allocation_pools": allocation_pools}, project=project)
        return net

    def add_image(self, iid: str, name: str, created_at: str) -> None:
        self.images[iid] = self._image_doc(iid, name, created_at)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ours(self) -> dict[str, list]:
        """Everything in project p1 (the test's project): what `down` must leave empty."""
        def mine(store):
            return sorted(x.get("name") or x.get("id") for x in store.values() if x.get("project_id", "p1") == "p1")
        return {"servers": sorted(s["name"] for s in self.servers.values()), "keypairs": sorted(self.keypairs),
                "server_groups": sorted(g["name"] for g in self.server_groups.values()),
                "networks": mine(self.networks), "subnets": mine(self.subnets), "routers": mine(self.routers),
                "floating_ips": sorted(f["floating_ip_address"] for f in self.floating_ips.values()),
                "security_groups": mine(self.groups),
                "ports": sorted(p["id"] for p in self.ports.values() if p["project_id"] == "p1")}

    # -- routing -----------------------------------------------------------------------------
    def route(self, method, path, query, body, act=False):
        """(operation name for counting/faults, status, JSON, headers). With act=False only the
        operation is named (so a fault can replace the answer before anything changes)."""
        for pattern, meth, op, handler in self.ROUTES:
            m = re.fullmatch(pattern, path)
            if m and meth == method:
                if not act:
                    return op, 0, None, {}
                with self.lock:
                    if method in ("POST", "PUT", "DELETE") and op and op != "token":
                        self.requests.append((op, path, body))
                    try:
                        status, data, extra = handler(self, query, body, *m.groups())
                    except Reply as reply:
                        status, data, extra = reply.status, reply.body, {}
                return op, status, data, extra
        if act:
            self.unknown.append(f"{method} {path}")
            if path.startswith("/network"):
                return None, 404, neutron_error(404, "HTTPNotFound", f"no route {method} {path}").body, {}
            return None, 404, nova_error(404, f"no route {method} {path}").body, {}
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
            "load-balancer": {"versions": [{"id": "v2.27", "status": "CURRENT", "updated": "2023-01-01T00:00:00Z",
                                            "links": [{"rel": "self", "href": f"{base}/load-balancer/v2"}]}]},
        }
        return 200, docs[service], {}

    def _token(self, query, body):
        base = self.url
        services = (("identity", "keystone", f"{base}/identity"), ("compute", "nova", f"{base}/compute/v2.1"),
                    ("network", "neutron", f"{base}/network"), ("image", "glance", f"{base}/image"))
        if self.octavia:
            services += (("load-balancer", "octavia", f"{base}/load-balancer"),)
        catalog = [{"type": t, "name": n, "id": n, "endpoints": [
            {"interface": i, "region": "RegionOne", "region_id": "RegionOne", "url": u, "id": f"{n}-{i}"}
            for i in ("public", "internal", "admin")]}
            for t, n, u in services]
        token = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                           "issued_at": "2026-01-01T00:00:00.000000Z",
                           "user": {"id": "u1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
                           "project": {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
                           "roles": [{"id": "r1", "name": "member"}], "catalog": catalog}}
        return 201, token, {"X-Subject-Token": TOKEN}

    # ==== Nova ==================================================================================
    def _look(self, server: dict) -> None:
        """One look at a server moves its life on: BUILD ends, a delete progresses."""
        server["_looks"] += 1
        if server["status"] == "BUILD" and server["_looks"] >= self.build_looks:
            if server["_boot_fails"]:
                server.update({"status": "ERROR", "OS-EXT-STS:vm_state": "error", "OS-EXT-STS:task_state": None,
                               "fault": {"code": 500, "message": "No valid host was found. ",
                                         "created": "2026-01-01T00:01:00Z"}})
            else:
                server.update({"status": "ACTIVE", "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": None,
                               "OS-EXT-STS:power_state": 1})
        if server.get("_deleting") is not None:
            server["_deleting"] += 1
            if server["_deleting"] >= self.delete_looks:
                if self.soft_delete and server["status"] != "SOFT_DELETED":
                    server.update({"status": "SOFT_DELETED", "OS-EXT-STS:vm_state": "soft-delete",
                                   "OS-EXT-STS:task_state": None})
                    server["_deleting"] = 0
                else:
                    self._reap(server)

    def _reap(self, server: dict) -> None:
        self.servers.pop(server["id"], None)
        for port in [p for p in self.ports.values() if p["device_id"] == server["id"]]:
            if port.get("_nova_made"):
                self._drop_port(port)
            else:
                port.update({"device_id": "", "device_owner": ""})
        for group in self.server_groups.values():
            if server["id"] in group["members"]:
                group["members"].remove(server["id"])

    def _server_view(self, s):
        view = {k: v for k, v in s.items() if not k.startswith("_")}
        if s["status"] not in ("ERROR", "DELETED"):
            view.pop("fault", None)
        addresses: dict[str, list] = {}
        for port in self.ports.values():
            if port["device_id"] != s["id"]:
                continue
            net = self.networks.get(port["network_id"], {"name": "?"})
            for ip in port["fixed_ips"]:
                addresses.setdefault(net["name"], []).append(
                    {"addr": ip["ip_address"], "version": 4, "OS-EXT-IPS:type": "fixed",
                     "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
                for fip in self.floating_ips.values():
                    if fip["port_id"] == port["id"] and fip["fixed_ip_address"] == ip["ip_address"]:
                        addresses[net["name"]].append({"addr": fip["floating_ip_address"], "version": 4,
                                                       "OS-EXT-IPS:type": "floating",
                                                       "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
        view["addresses"] = addresses
        return view

    def _list_servers(self, query, body):
        servers = list(self.servers.values())
        if "name" in query:
            rx = re.compile(query["name"])
            servers = [s for s in servers if rx.search(s["name"])]
        for s in servers:
            self._look(s)
        return 200, {"servers": [self._server_view(s) for s in servers if s["id"] in self.servers]}, {}

    def _create_server(self, query, body):
        b = body.get("server")
        if not isinstance(b, dict) or not b.get("name"):
            raise nova_error(400, "Invalid input for field/attribute server. Value: None. 'name' is a required property")
        if b.get("imageRef") not in self.images:
            raise nova_error(400, f"Image {b.get('imageRef')} could not be found.")
        if b.get("flavorRef") not in self.flavors:
            raise nova_error(400, f"Flavor {b.get('flavorRef')} could not be found.")
        if b.get("key_name") is not None and b["key_name"] not in self.keypairs:
            raise nova_error(400, "Invalid key_name provided.")
        user_data = b.get("user_data")
        if user_data is not None:
            if len(user_data) > USER_DATA_MAX:
                raise nova_error(400, f"Invalid input for field/attribute user_data. Value: ... is too long "
                                      f"({len(user_data)} > {USER_DATA_MAX})")
            try:
                base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                raise nova_error(400, "User data needs to be valid base 64.") from None
        if "config_drive" in b and not isinstance(b["config_drive"], bool):
            raise nova_error(400, f"Invalid input for field/attribute config_drive. Value: {b['config_drive']}")
        zone = b.get("availability_zone")
        if zone is not None and zone not in self.zones:
            raise nova_error(400, f"The requested availability zone is not available")
        groups = []
        for sg in b.get("security_groups") or [{"name": "default"}]:
            ref = sg.get("name")
            found = [g for g in self.groups.values() if ref in (g["id"], g["name"])]
            if ref != "default" and not found:
                raise nova_error(400, f"Security group {ref} not found for project p1.")
            if len(found) > 1:
                raise nova_error(409, f"Multiple security groups found matching '{ref}'. Use an ID to be more specific.")
            groups.extend(g["id"] for g in found)
        hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}
        group = None
        if "group" in hints:
            group = self.server_groups.get(hints["group"])
            if group is None:
                raise nova_error(400, f"Invalid server group {hints['group']}")
        if len(self.servers) >= self.instance_quota:
            raise nova_error(403, f"Quota exceeded for instances: Requested 1, but already used "
                                  f"{len(self.servers)} of {self.instance_quota} instances")
        sid = str(uuid.uuid4())
        requested = b.get("networks")
        if not requested or requested == "auto":
            raise nova_error(409, "Multiple possible networks found, use a Network ID to be more specific.")
        ports = []
        for net in requested:
            if "port" in net:
                port = self.ports.get(net["port"])
                if port is None:
                    raise nova_error(400, f"Port {net['port']} could not be found.")
                if port["device_id"]:
                    raise nova_error(409, f"Port {net['port']} is still in use.")
                ports.append(port)
                continue
            if net.get("uuid") not in self.networks:
                raise nova_error(400, f"Network {net.get('uuid')} could not be found.")
            try:
                fixed = [{"ip_address": net["fixed_ip"]}] if net.get("fixed_ip") else None
                port = self._make_port({"network_id": net["uuid"], "fixed_ips": fixed,
                                        "security_groups": groups}, nova=True)
            except Reply as reply:  # Nova relays Neutron's refusal in its own shape
                detail = reply.body["NeutronError"]["message"]
                raise nova_error(400 if reply.status == 400 else 409, detail) from None
            ports.append(port)
        for port in ports:
            port.update({"device_id": sid, "device_owner": f"compute:{zone or 'nova'}"})
        boot_fails = any(re.search(rx, b["name"]) for rx in self.boot_failures)
        if boot_fails:
            self.boot_failures.remove(next(rx for rx in self.boot_failures if re.search(rx, b["name"])))
        self.servers[sid] = {
            "id": sid, "name": b["name"], "status": "BUILD", "metadata": b.get("metadata", {}),
            "OS-EXT-STS:vm_state": "building", "OS-EXT-STS:task_state": "scheduling",
            "flavor": {"id": b.get("flavorRef")}, "image": {"id": b.get("imageRef")}, "key_name": b.get("key_name"),
            "user_data": user_data, "config_drive": "True" if b.get("config_drive") else "",
            "security_groups": [{"name": self.groups[g]["name"]} for g in groups] or [{"name": "default"}],
            "OS-EXT-AZ:availability_zone": zone or "nova", "links": [], "tenant_id": "p1", "user_id": "u1",
            "created": "2026-01-01T00:00:00Z", "_looks": 0, "_boot_fails": boot_fails, "_deleting": None,
            "_requested": b, "_hints": hints,
        }
        if group is not None:
            group["members"].append(sid)
        return 202, {"server": {"id": sid, "links": [], "adminPass": "x",
                                "security_groups": self.servers[sid]["security_groups"]}}, {}

    def _get_server(self, query, body, sid):
        server = self.servers.get(sid)
        if server is None:
            raise nova_error(404, f"Instance {sid} could not be found.")
        self._look(server)
        if sid not in self.servers:
            raise nova_error(404, f"Instance {sid} could not be found.")
        return 200, {"server": self._server_view(server)}, {}

    def _delete_server(self, query, body, sid):
        server = self.servers.get(sid)
        if server is None:
            raise nova_error(404, f"Instance {sid} could not be found.")
        if server["status"] == "SOFT_DELETED":
            raise nova_error(409, f"Cannot 'delete' instance {sid} while it is in vm_state soft-delete")
        if server["_deleting"] is None:
            server["_deleting"] = 0
            server["OS-EXT-STS:task_state"] = "deleting"
        return 204, None, {}

    def _force_delete(self, query, body, sid):
        server = self.servers.get(sid)
        if server is None:
            raise nova_error(404, f"Instance {sid} could not be found.")
        if "forceDelete" not in body:
            raise nova_error(400, "Unsupported server action")
        if server["status"] != "SOFT_DELETED":
            raise nova_error(409, f"Cannot 'forceDelete' instance {sid} while it is in vm_state {server['OS-EXT-STS:vm_state']}")
        self._reap(server)
        return 202, None, {}

    def _flavors(self, query, body):
        return 200, {"flavors": list(self.flavors.values())}, {}

    def _flavor(self, query, body, fid):
        f = self.flavors.get(fid)
        if f is None:
            raise nova_error(404, f"Flavor {fid} could not be found.")
        return 200, {"flavor": f}, {}

    def _keypairs(self, query, body):
        return 200, {"keypairs": [{"keypair": k} for k in self.keypairs.values()]}, {}

    def _keypair(self, query, body, name):
        k = self.keypairs.get(name)
        if k is None:
            raise nova_error(404, f"Keypair {name} not found for user u1")
        return 200, {"keypair": k}, {}

    def _create_keypair(self, query, body):
        k = body.get("keypair") or {}
        name, key = k.get("name"), k.get("public_key")
        if not name or not re.fullmatch(r"[A-Za-z0-9 _.@-]{1,255}", name):
            raise nova_error(400, "Keypair data is invalid: Keypair name contains unsafe characters")
        if name in self.keypairs:
            raise nova_error(409, f"Key pair '{name}' already exists.")
        if key is None:
            raise nova_error(400, "Keypair data is invalid: generating keys is not supported here")
        if not SSH_KEY_RE.match(key.strip()):  # Nova parses exactly one OpenSSH public key
            raise nova_error(400, "Keypair data is invalid: failed to generate fingerprint")
        fingerprint = ":".join(f"{b:02x}" for b in __import__("hashlib").md5(key.split()[1].encode()).digest())
        self.keypairs[name] = {"name": name, "public_key": key.strip(), "fingerprint": fingerprint, "type": "ssh",
                               "user_id": "u1"}
        return 200, {"keypair": self.keypairs[name]}, {}

    def _delete_keypair(self, query, body, name):
        if self.keypairs.pop(name, None) is None:
            raise nova_error(404, f"Keypair {name} not found for user u1")
        return 202, None, {}

    def _list_server_groups(self, query, body):
        return 200, {"server_groups": [self._group_view(g) for g in self.server_groups.values()]}, {}

    def _group_view(self, g):
        return {k: v for k, v in g.items() if not k.startswith("_")}

    def _create_server_group(self, query, body):
        g = body.get("server_group") or {}
        policy = g.get("policy")
        if "policies" in g:  # removed in 2.64, which the client negotiates here
            raise nova_error(400, "Invalid input for field/attribute server_group. Additional properties are "
                                  "not allowed ('policies' was unexpected)")
        if not g.get("name") or len(g["name"]) > 255:
            raise nova_error(400, "Invalid input for field/attribute name.")
        if policy not in SERVER_GROUP_POLICIES:
            raise nova_error(400, f"Invalid input for field/attribute policy. Value: {policy}. "
                                  f"'{policy}' is not one of {list(SERVER_GROUP_POLICIES)}")
        rules = g.get("rules") or {}
        if rules and policy != "anti-affinity":
            raise nova_error(400, "Only anti-affinity policy supports rules.")
        gid = str(uuid.uuid4())
        self.server_groups[gid] = {"id": gid, "name": g["name"], "policy": policy, "rules": rules, "members": [],
                                   "project_id": "p1", "user_id": "u1"}
        return 200, {"server_group": self._group_view(self.server_groups[gid])}, {}

    def _get_server_group(self, query, body, gid):
        g = self.server_groups.get(gid)
        if g is None:
            raise nova_error(404, f"Instance group {gid} could not be found.")
        return 200, {"server_group": self._group_view(g)}, {}

    def _delete_server_group(self, query, body, gid):
        if self.server_groups.pop(gid, None) is None:
            raise nova_error(404, f"Instance group {gid} could not be found.")
        return 204, None, {}

    def _zones(self, query, body):
        return 200, {"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": True}, "hosts": None}
                                              for z in self.zones]}, {}

    # ==== Glance ================================================================================
    @staticmethod
    def _image_doc(iid, name, created_at):
        return {"id": iid, "name": name, "status": "active", "visibility": "public", "created_at": created_at,
                "updated_at": created_at, "disk_format": "qcow2", "container_format": "bare", "tags": []}

    def _images(self, query, body):
        images = [i for i in self.images.values() if "name" not in query or i["name"] == query["name"]]
        return 200, {"images": images}, {}

    def _image(self, query, body, iid):
        i = self.images.get(iid)
        if i is None:
            raise Reply(404, {"message": f"No image found with ID {iid}", "code": "404 Not Found",
                              "title": "Not Found"})
        return 200, i, {}

    # ==== Neutron ===============================================================================
    def _match(self, item, query):
        for k, v in query.items():
            if k in ("fields", "limit", "marker", "sort_key", "sort_dir"):
                continue
            if k == "tags":
                if not set(v.split(",")) <= set(item.get("tags", [])):
                    return False
            elif k == "tags-any":
                if not set(v.split(",")) & set(item.get("tags", [])):
                    return False
            elif isinstance(item.get(k), bool):
                if str(item[k]).lower() != v.lower():
                    return False
            elif str(item.get(k)) != v:
                return False
        return True

    def _collection(self, store, key, query):
        return 200, {key: [x for x in store.values() if self._match(x, query)]}, {}

    def _item(self, store, key, iid, kind):
        x = store.get(iid)
        if x is None:
            raise neutron_error(404, f"{kind}NotFound", f"{kind} {iid} could not be found.")
        return 200, {key: x}, {}

    def _body(self, body, key):
        item = body.get(key)
        if not isinstance(item, dict):
            raise neutron_error(400, "HTTPBadRequest", f"Resource body required: {key}")
        return item

    def _new(self, **fields):
        return {"id": str(uuid.uuid4()), "tags": [], "description": "", "tenant_id": "p1", "project_id": "p1",
                "created_at": "2026-01-01T00:00:00Z", **fields}

    # networks
    def _create_network(self, query, body):
        b = self._body(body, "network")
        if b.get("router:external"):
            raise neutron_error(403, "PolicyNotAuthorized", "(rule:create_network:router:external) is disallowed by policy")
        net = self._new(name=b.get("name", ""), status="ACTIVE", subnets=[], admin_state_up=True, shared=False,
                        **{"router:external": False, "description": b.get("description", "")})
        self.networks[net["id"]] = net
        return 201, {"network": net}, {}

    def _delete_network(self, query, body, nid):
        net = self.networks.get(nid)
        if net is None:
            raise neutron_error(404, "NetworkNotFound", f"Network {nid} could not be found.")
        used = [p for p in self.ports.values() if p["network_id"] == nid and p["device_owner"] != "network:dhcp"]
        if used:
            raise neutron_error(409, "NetworkInUse", f"Unable to complete operation on network {nid}. "
                                                     "There are one or more ports still in use on the network.")
        for sid in list(net["subnets"]):
            self.subnets.pop(sid, None)
        for p in [p for p in self.ports.values() if p["network_id"] == nid]:
            self.ports.pop(p["id"])
        del self.networks[nid]
        return 204, None, {}

    # subnets
    def _make_subnet(self, b, project="p1"):
        net = self.networks.get(b.get("network_id"))
        if net is None:
            raise neutron_error(404, "NetworkNotFound", f"Network {b.get('network_id')} could not be found.")
        try:
            cidr = ipaddress.ip_network(b.get("cidr"), strict=True)
        except (TypeError, ValueError):
            raise neutron_error(400, "HTTPBadRequest", f"Invalid input for cidr. Reason: '{b.get('cidr')}' "
                                                       "is not a valid IP subnet.") from None
        if b.get("ip_version", 4) != cidr.version:
            raise neutron_error(400, "HTTPBadRequest", "Invalid input for operation: ip_version and cidr disagree.")
        for other in self.subnets.values():
            if other["network_id"] == net["id"] and ipaddress.ip_network(other["cidr"]).overlaps(cidr):
                raise neutron_error(400, "BadRequest", f"Invalid input for operation: Requested subnet with cidr: "
                                                       f"{cidr} for network: {net['id']} overlaps with another subnet.")
        hosts = list(cidr.hosts())
        gateway = b.get("gateway_ip", str(hosts[0]))
        pools = b.get("allocation_pools")
        if pools:
            ranges = []
            for pool in pools:
                try:
                    start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
                except (KeyError, ValueError):
                    raise neutron_error(400, "HTTPBadRequest", f"Invalid input for allocation_pools: {pool}") from None
                if start not in cidr or end not in cidr or start > end:
                    raise neutron_error(400, "OutOfBoundsAllocationPool",
                                        f"The allocation pool {pool['start']}-{pool['end']} spans beyond the subnet "
                                        f"cidr {cidr}.")
                if gateway and start <= ipaddress.ip_address(gateway) <= end:
                    raise neutron_error(409, "GatewayConflictWithAllocationPools",
                                        f"Gateway ip {gateway} conflicts with allocation pool {pool['start']}-{pool['end']}")
                for s2, e2 in ranges:
                    if start <= e2 and s2 <= end:
                        raise neutron_error(400, "OverlappingAllocationPools", "Found overlapping allocation pools")
                ranges.append((start, end))
        else:
            first = hosts[1] if gateway == str(hosts[0]) else hosts[0]
            pools = [{"start": str(first), "end": str(hosts[-1])}]
        servers = b.get("dns_nameservers") or []
        for ns in servers:
            try:
                ipaddress.ip_address(ns)
            except ValueError:
                raise neutron_error(400, "HTTPBadRequest", f"Invalid input for dns_nameservers. Reason: "
                                                           f"'{ns}' is not a valid nameserver.") from None
        if len(set(servers)) != len(servers):
            raise neutron_error(400, "HTTPBadRequest", "Duplicate nameserver in dns_nameservers")
        subnet = self._new(name=b.get("name", ""), network_id=net["id"], cidr=str(cidr), ip_version=cidr.version,
                           gateway_ip=gateway, allocation_pools=pools, dns_nameservers=servers, enable_dhcp=True,
                           host_routes=[], tenant_id=project, project_id=project)
        self.subnets[subnet["id"]] = subnet
        net["subnets"].append(subnet["id"])
        return subnet

    def _create_subnet(self, query, body):
        return 201, {"subnet": self._make_subnet(self._body(body, "subnet"))}, {}

    def _delete_subnet(self, query, body, sid):
        subnet = self.subnets.get(sid)
        if subnet is None:
            raise neutron_error(404, "SubnetNotFound", f"Subnet {sid} could not be found.")
        if any(ip["subnet_id"] == sid for p in self.ports.values() if p["device_owner"] != "network:dhcp"
               for ip in p["fixed_ips"]):
            raise neutron_error(409, "SubnetInUse", f"Unable to complete operation on subnet {sid}: "
                                                    "One or more ports have an IP allocation from this subnet.")
        del self.subnets[sid]
        self.networks[subnet["network_id"]]["subnets"].remove(sid)
        return 204, None, {}

    # ports and addresses
    def _taken(self, subnet_id) -> set[str]:
        return {ip["ip_address"] for p in self.ports.values() for ip in p["fixed_ips"] if ip["subnet_id"] == subnet_id}

    def _allocate(self, net) -> dict:
        """Neutron's way: a random free address inside a subnet's allocation pools."""
        for sid in net["subnets"]:
            subnet = self.subnets[sid]
            taken = self._taken(sid)
            free = [str(address) for pool in subnet["allocation_pools"]
                    for block in ipaddress.summarize_address_range(ipaddress.ip_address(pool["start"]),
                                                                    ipaddress.ip_address(pool["end"]))
                    for address in block if str(address) not in taken]
            if free:
                return {"subnet_id": sid, "ip_address": self.random.choice(free)}
        raise neutron_error(409, "IpAddressGenerationFailure", f"No more IP addresses available on network {net['id']}.")

    def _make_port(self, b, nova=False):
        net = self.networks.get(b.get("network_id"))
        if net is None:
            raise neutron_error(404, "NetworkNotFound", f"Network {b.get('network_id')} could not be found.")
        fixed = []
        for want in b.get("fixed_ips") or [None]:
            if want is None or "ip_address" not in want:
                fixed.append(self._allocate(net))
                continue
            ip = ipaddress.ip_address(want["ip_address"])
            subnet = next((self.subnets[s] for s in net["subnets"] if ip in ipaddress.ip_network(self.subnets[s]["cidr"])
                           and want.get("subnet_id", s) == s), None)
            if subnet is None:
                raise neutron_error(400, "InvalidIpForNetwork",
                                    f"IP address {ip} is not a valid IP for any of the subnets on the specified network.")
            gateway_taken = str(ip) == subnet["gateway_ip"] and b.get("device_owner") != "network:router_interface"
            if str(ip) in self._taken(subnet["id"]) or gateway_taken:
                raise neutron_error(409, "IpAddressAlreadyAllocated",
                                    f"IP address {ip} already allocated in subnet {subnet['id']}")
            fixed.append({"subnet_id": subnet["id"], "ip_address": str(ip)})
        for pair in b.get("allowed_address_pairs") or []:
            try:
                ipaddress.ip_network(pair["ip_address"], strict=False)
            except (KeyError, ValueError):
                raise neutron_error(400, "HTTPBadRequest", f"Invalid input for allowed_address_pairs: {pair}") from None
        port = self._new(name=b.get("name", ""), network_id=net["id"], fixed_ips=fixed,
                         mac_address="fa:16:3e:%02x:%02x:%02x" % tuple(self.random.randrange(256) for _ in range(3)),
                         device_id=b.get("device_id", ""), device_owner=b.get("device_owner", ""), status="ACTIVE",
                         security_groups=b.get("security_groups", []), port_security_enabled=True,
                         allowed_address_pairs=b.get("allowed_address_pairs", []), admin_state_up=True,
                         _nova_made=nova)
        self.ports[port["id"]] = port
        return port

    def _port_view(self, p):
        return {k: v for k, v in p.items() if not k.startswith("_")}

    def _list_ports(self, query, body):
        return 200, {"ports": [self._port_view(p) for p in self.ports.values() if self._match(p, query)]}, {}

    def _get_port(self, query, body, pid):
        p = self.ports.get(pid)
        if p is None:
            raise neutron_error(404, "PortNotFound", f"Port {pid} could not be found.")
        return 200, {"port": self._port_view(p)}, {}

    def _create_port(self, query, body):
        return 201, {"port": self._port_view(self._make_port(self._body(body, "port")))}, {}

    def _update_port(self, query, body, pid):
        p = self.ports.get(pid)
        if p is None:
            raise neutron_error(404, "PortNotFound", f"Port {pid} could not be found.")
        b = self._body(body, "port")
        for key in ("allowed_address_pairs", "security_groups", "name", "description"):
            if key in b:
                p[key] = b[key]
        return 200, {"port": self._port_view(p)}, {}

    def _drop_port(self, port):
        self.ports.pop(port["id"], None)
        for fip in self.floating_ips.values():
            if fip["port_id"] == port["id"]:
                fip.update({"port_id": None, "fixed_ip_address": None, "status": "DOWN", "router_id": None})

    def _delete_port(self, query, body, pid):
        p = self.ports.get(pid)
        if p is None:
            raise neutron_error(404, "PortNotFound", f"Port {pid} could not be found.")
        if p["device_owner"] == "network:router_interface":
            raise neutron_error(409, "L3PortInUse", f"Port {pid} cannot be deleted directly via the port API: "
                                                    "has device owner network:router_interface.")
        self._drop_port(p)
        return 204, None, {}

    # routers
    def _check_gateway(self, info):
        if not info:
            return None
        net = self.networks.get(info.get("network_id"))
        if net is None:
            raise neutron_error(404, "NetworkNotFound", f"Network {info.get('network_id')} could not be found.")
        if not net["router:external"]:
            raise neutron_error(400, "BadRequest", f"Bad router request: Network {net['id']} is not an external network.")
        port = self._make_port({"network_id": net["id"], "device_owner": "network:router_gateway"})
        port["project_id"] = "admin"
        return {"network_id": net["id"], "enable_snat": True,
                "external_fixed_ips": [dict(ip) for ip in port["fixed_ips"]], "_port": port["id"]}

    def _router_view(self, r):
        view = dict(r)
        if view.get("external_gateway_info"):
            view["external_gateway_info"] = {k: v for k, v in r["external_gateway_info"].items() if not k.startswith("_")}
        return view

    def _list_routers(self, query, body):
        return 200, {"routers": [self._router_view(r) for r in self.routers.values() if self._match(r, query)]}, {}

    def _get_router(self, query, body, rid):
        r = self.routers.get(rid)
        if r is None:
            raise neutron_error(404, "RouterNotFound", f"Router {rid} could not be found")
        return 200, {"router": self._router_view(r)}, {}

    def _create_router(self, query, body):
        b = self._body(body, "router")
        router = self._new(name=b.get("name", ""), status="ACTIVE", admin_state_up=True, routes=[],
                           description=b.get("description", ""), external_gateway_info=None)
        router["external_gateway_info"] = self._check_gateway(b.get("external_gateway_info"))
        self.routers[router["id"]] = router
        return 201, {"router": self._router_view(router)}, {}

    def _update_router(self, query, body, rid):
        r = self.routers.get(rid)
        if r is None:
            raise neutron_error(404, "RouterNotFound", f"Router {rid} could not be found")
        b = self._body(body, "router")
        if "external_gateway_info" in b:
            if r["external_gateway_info"]:
                self.ports.pop(r["external_gateway_info"]["_port"], None)
            r["external_gateway_info"] = self._check_gateway(b["external_gateway_info"])
        return 200, {"router": self._router_view(r)}, {}

    def _add_interface(self, query, body, rid):
        r = self.routers.get(rid)
        if r is None:
            raise neutron_error(404, "RouterNotFound", f"Router {rid} could not be found")
        subnet = self.subnets.get(body.get("subnet_id"))
        if subnet is None:
            raise neutron_error(404, "SubnetNotFound", f"Subnet {body.get('subnet_id')} could not be found.")
        if not subnet["gateway_ip"]:
            raise neutron_error(400, "BadRequest", f"Bad router request: Subnet {subnet['id']} does not have a gateway IP.")
        for p in self.ports.values():
            if p["device_id"] == rid and any(ip["subnet_id"] == subnet["id"] for ip in p["fixed_ips"]):
                raise neutron_error(400, "BadRequest", f"Bad router request: Router already has a port on subnet "
                                                       f"{subnet['id']}.")
        port = self._make_port({"network_id": subnet["network_id"], "device_id": rid,
                                "device_owner": "network:router_interface",
                                "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": subnet["gateway_ip"]}]})
        return 200, {"id": rid, "subnet_id": subnet["id"], "subnet_ids": [subnet["id"]], "port_id": port["id"],
                     "network_id": subnet["network_id"], "tenant_id": "p1", "project_id": "p1"}, {}

    def _remove_interface(self, query, body, rid):
        if rid not in self.routers:
            raise neutron_error(404, "RouterNotFound", f"Router {rid} could not be found")
        port = next((p for p in self.ports.values() if p["device_id"] == rid
                     and p["device_owner"] == "network:router_interface"
                     and any(ip["subnet_id"] == body.get("subnet_id") for ip in p["fixed_ips"])), None)
        if port is None:
            raise neutron_error(404, "RouterInterfaceNotFoundForSubnet",
                                f"Router {rid} has no interface on subnet {body.get('subnet_id')}")
        if any(f["router_id"] == rid and f["port_id"] and any(
                ip["subnet_id"] == body.get("subnet_id") for ip in self.ports[f["port_id"]]["fixed_ips"])
               for f in self.floating_ips.values() if f["port_id"] in self.ports):
            raise neutron_error(409, "RouterInterfaceInUseByFloatingIP",
                                f"Router interface for subnet {body.get('subnet_id')} on router {rid} cannot be "
                                "deleted, as it is required by one or more floating IPs.")
        self.ports.pop(port["id"])
        return 200, {"id": rid, "subnet_id": body.get("subnet_id"), "port_id": port["id"]}, {}

    def _delete_router(self, query, body, rid):
        r = self.routers.get(rid)
        if r is None:
            raise neutron_error(404, "RouterNotFound", f"Router {rid} could not be found")
        if any(p["device_id"] == rid and p["device_owner"] == "network:router_interface" for p in self.ports.values()):
            raise neutron_error(409, "RouterInUse", f"Router {rid} still has ports")
        if r["external_gateway_info"]:
            self.ports.pop(r["external_gateway_info"]["_port"], None)
        del self.routers[rid]
        return 204, None, {}

    # floating IPs
    def _router_for(self, port, external_net_id):
        """The router joining the port's subnet to the external network, as Neutron looks it up."""
        subnets = {ip["subnet_id"] for ip in port["fixed_ips"]}
        for r in self.routers.values():
            if (r["external_gateway_info"] or {}).get("network_id") != external_net_id:
                continue
            if any(p["device_id"] == r["id"] and p["device_owner"] == "network:router_interface"
                   and {ip["subnet_id"] for ip in p["fixed_ips"]} & subnets for p in self.ports.values()):
                return r
        return None

    def _associate(self, fip, port_id):
        if port_id is None:
            fip.update({"port_id": None, "fixed_ip_address": None, "router_id": None, "status": "DOWN"})
            return
        port = self.ports.get(port_id)
        if port is None:
            raise neutron_error(404, "PortNotFound", f"Port {port_id} could not be found.")
        router = self._router_for(port, fip["floating_network_id"])
        if router is None:
            raise neutron_error(404, "ExternalGatewayForFloatingIPNotFound",
                                f"External network {fip['floating_network_id']} is not reachable from subnet "
                                f"{port['fixed_ips'][0]['subnet_id']}.  Therefore, cannot associate Port {port_id} "
                                "with a Floating IP.")
        if any(f["port_id"] == port_id and f["id"] != fip["id"] for f in self.floating_ips.values()):
            raise neutron_error(409, "FloatingIPPortAlreadyAssociated",
                                f"Cannot associate floating IP with port {port_id}: it already has a floating IP.")
        fip.update({"port_id": port_id, "fixed_ip_address": port["fixed_ips"][0]["ip_address"],
                    "router_id": router["id"], "status": "ACTIVE"})

    def _list_fips(self, query, body):
        return self._collection(self.floating_ips, "floatingips", query)

    def _get_fip(self, query, body, fid):
        return self._item(self.floating_ips, "floatingip", fid, "FloatingIP")

    def _create_fip(self, query, body):
        b = self._body(body, "floatingip")
        net = self.networks.get(b.get("floating_network_id"))
        if net is None:
            raise neutron_error(404, "NetworkNotFound", f"Network {b.get('floating_network_id')} could not be found.")
        if not net["router:external"]:
            raise neutron_error(400, "BadRequest", f"Bad floatingip request: Network {net['id']} is not a valid "
                                                   "external network.")
        taken = {f["floating_ip_address"] for f in self.floating_ips.values()}
        address = self._allocate(net)
        while address["ip_address"] in taken:
            address = self._allocate(net)
        fip = self._new(floating_ip_address=address["ip_address"], floating_network_id=net["id"], port_id=None,
                        fixed_ip_address=None, router_id=None, status="DOWN", description=b.get("description", ""))
        self._associate(fip, b.get("port_id"))
        self.floating_ips[fip["id"]] = fip
        return 201, {"floatingip": fip}, {}

    def _update_fip(self, query, body, fid):
        fip = self.floating_ips.get(fid)
        if fip is None:
            raise neutron_error(404, "FloatingIPNotFound", f"Floating IP {fid} could not be found")
        b = self._body(body, "floatingip")
        if "port_id" in b:
            self._associate(fip, b["port_id"])
        return 200, {"floatingip": fip}, {}

    def _delete_fip(self, query, body, fid):
        if self.floating_ips.pop(fid, None) is None:
            raise neutron_error(404, "FloatingIPNotFound", f"Floating IP {fid} could not be found")
        return 204, None, {}

    # security groups
    def _create_group(self, query, body):
        b = self._body(body, "security_group")
        group = self._new(name=b.get("name", ""), description=b.get("description", ""), security_group_rules=[])
        self.groups[group["id"]] = group
        for ethertype in ("IPv4", "IPv6"):  # Neutron's default egress rules
            rule = self._new(security_group_id=group["id"], direction="egress", ethertype=ethertype, protocol=None,
                             port_range_min=None, port_range_max=None, remote_ip_prefix=None, remote_group_id=None)
            self.rules[rule["id"]] = rule
        return 201, {"security_group": group}, {}

    def _delete_group(self, query, body, gid):
        if gid not in self.groups:
            raise neutron_error(404, "SecurityGroupNotFound", f"Security group {gid} does not exist")
        if any(gid in p["security_groups"] for p in self.ports.values()):
            raise neutron_error(409, "SecurityGroupInUse", f"Security Group {gid} in use.")
        del self.groups[gid]
        for rid in [r for r, rule in self.rules.items() if rule["security_group_id"] == gid]:
            del self.rules[rid]
        return 204, None, {}

    def _list_rules(self, query, body):
        return self._collection(self.rules, "security_group_rules", query)

    def _create_rule(self, query, body):
        r = self._body(body, "security_group_rule")
        if r.get("security_group_id") not in self.groups:
            raise neutron_error(404, "SecurityGroupNotFound", f"Security group {r.get('security_group_id')} does not exist")
        if r.get("protocol") not in (None, "tcp", "udp", "icmp", "vrrp") and not str(r.get("protocol")).isdigit():
            raise neutron_error(400, "SecurityGroupRuleInvalidProtocol", f"Security group rule protocol "
                                                                         f"{r.get('protocol')} not supported.")
        lo, hi = r.get("port_range_min"), r.get("port_range_max")
        if r.get("protocol") in ("tcp", "udp") and lo is not None and (hi is None or not 1 <= lo <= hi <= 65535):
            raise neutron_error(400, "SecurityGroupInvalidPortRange", "For TCP/UDP protocols, port_range_min must be "
                                                                      "<= port_range_max")
        if r.get("remote_ip_prefix") and r.get("remote_group_id"):
            raise neutron_error(400, "SecurityGroupRemoteGroupAndRemoteIpPrefix",
                                "Only remote_ip_prefix or remote_group_id may be provided.")
        for existing in self.rules.values():
            if all(existing.get(k) == r.get(k) for k in ("security_group_id", "direction", "protocol", "port_range_min",
                                                         "port_range_max", "remote_ip_prefix", "remote_group_id")):
                raise neutron_error(409, "SecurityGroupRuleExists",
                                    f"Security group rule already exists. Rule id is {existing['id']}.")
        rule = self._new(**{"remote_ip_prefix": None, "remote_group_id": None, "protocol": None,
                            "port_range_min": None, "port_range_max": None, **r})
        self.rules[rule["id"]] = rule
        return 201, {"security_group_rule": rule}, {}

    def _delete_rule(self, query, body, rid):
        if self.rules.pop(rid, None) is None:
            raise neutron_error(404, "SecurityGroupRuleNotFound", f"Security group rule {rid} does not exist")
        return 204, None, {}

    # tags
    def _set_tags(self, query, body, kind, iid):
        store = {"networks": self.networks, "subnets": self.subnets, "ports": self.ports, "routers": self.routers,
                 "floatingips": self.floating_ips, "security-groups": self.groups}[kind]
        item = store.get(iid)
        if item is None:
            raise neutron_error(404, "NotFound", f"{kind} {iid} could not be found.")
        tags = body.get("tags")
        if not isinstance(tags, list) or any(not isinstance(t, str) or "," in t or len(t) > 255 for t in tags):
            raise neutron_error(400, "InvalidInput", f"Invalid input for operation: Invalid tags body: {tags}")
        item["tags"] = sorted(set(tags))
        return 200, {"tags": item["tags"]}, {}


    # ==== Octavia (load-balancer v2, shaped like its API reference) ===========================
    # Every change leaves the load balancer PENDING_UPDATE (PENDING_CREATE when made) until it
    # is looked at twice; a change while it is not ACTIVE is refused with 409, as Octavia does.
    def _octavia_error(self, status, message):
        return Reply(status, {"faultcode": "Client" if status < 500 else "Server", "faultstring": message,
                              "debuginfo": None})

    def _lb_of(self, lb_id):
        lb = self.load_balancers.get(lb_id)
        if lb is None:
            raise self._octavia_error(404, f"Load Balancer {lb_id} not found.")
        return lb

    def _lb_view(self, lb):
        if lb["provisioning_status"].startswith("PENDING"):
            lb["_looks"] += 1
            if lb["_looks"] >= 2:
                if lb["provisioning_status"] == "PENDING_DELETE":
                    self._drop_load_balancer(lb)
                    raise self._octavia_error(404, f"Load Balancer {lb['id']} not found.")
                lb["provisioning_status"], lb["operating_status"] = "ACTIVE", "ONLINE"
        view = {k: v for k, v in lb.items() if not k.startswith("_")}
        view["listeners"] = [{"id": i} for i, x in self.listeners.items() if x["loadbalancers"][0]["id"] == lb["id"]]
        view["pools"] = [{"id": i} for i, x in self.pools.items() if x["loadbalancers"][0]["id"] == lb["id"]]
        return view

    def _change(self, lb):
        """A change to `lb` or its children: refused unless ACTIVE, then PENDING_UPDATE."""
        if lb["provisioning_status"] != "ACTIVE":
            raise self._octavia_error(409, f"Load Balancer {lb['id']} is immutable and cannot be updated.")
        lb["provisioning_status"], lb["_looks"] = "PENDING_UPDATE", 0

    def _octavia_new(self, body, key, required):
        item = body.get(key)
        if not isinstance(item, dict):
            raise self._octavia_error(400, f"Invalid input for field/attribute {key}.")
        for field in required:
            if item.get(field) in (None, ""):
                raise self._octavia_error(400, f"Invalid input for field/attribute {field}. Value: 'None'. "
                                               "Mandatory field missing.")
        return item, {"id": str(uuid.uuid4()), "name": item.get("name", ""), "description": item.get("description", ""),
                      "admin_state_up": True, "project_id": "p1", "tags": list(item.get("tags") or []),
                      "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
                      "created_at": "2026-01-01T00:00:00", "updated_at": None}

    def _list_lbs(self, query, body):
        return 200, {"loadbalancers": [self._lb_view(x) for x in list(self.load_balancers.values())
                                       if self._match(x, query)]}, {}

    def _create_lb(self, query, body):
        item, lb = self._octavia_new(body, "loadbalancer", ("vip_subnet_id",))
        subnet = self.subnets.get(item["vip_subnet_id"])
        if subnet is None:
            raise self._octavia_error(400, f"Validation failure: Subnet {item['vip_subnet_id']} not found.")
        port = self._make_port({"network_id": subnet["network_id"], "fixed_ips": [{"subnet_id": subnet["id"]}],
                                "name": f"octavia-lb-{lb['id']}", "device_owner": "Octavia"})
        port["device_id"] = f"lb-{lb['id']}"
        lb.update(vip_subnet_id=subnet["id"], vip_network_id=subnet["network_id"], vip_port_id=port["id"],
                  vip_address=port["fixed_ips"][0]["ip_address"], provider="amphora", flavor_id=None,
                  availability_zone=None, provisioning_status="PENDING_CREATE", operating_status="OFFLINE", _looks=0)
        self.load_balancers[lb["id"]] = lb
        return 201, {"loadbalancer": self._lb_view(lb)}, {}

    def _get_lb(self, query, body, lb_id):
        return 200, {"loadbalancer": self._lb_view(self._lb_of(lb_id))}, {}

    def _drop_load_balancer(self, lb):
        for store in (self.members, self.health_monitors, self.pools, self.listeners):
            for key in [k for k, x in store.items() if x.get("_lb") == lb["id"]]:
                del store[key]
        port = self.ports.get(lb["vip_port_id"])
        if port is not None:
            self._drop_port(port)
        self.load_balancers.pop(lb["id"], None)

    def _delete_lb(self, query, body, lb_id):
        lb = self._lb_of(lb_id)
        children = any(x.get("_lb") == lb_id for x in list(self.listeners.values()) + list(self.pools.values()))
        if children and query.get("cascade", "").lower() != "true":
            raise self._octavia_error(400, f"Cannot delete Load Balancer {lb_id} - it has children")
        if lb["provisioning_status"] not in ("ACTIVE", "ERROR"):
            raise self._octavia_error(409, f"Invalid state {lb['provisioning_status']} of loadbalancer resource {lb_id}")
        lb["provisioning_status"], lb["_looks"] = "PENDING_DELETE", 0
        return 204, None, {}

    def _list_children(self, store, key):
        def handler(s, query, body):
            return 200, {key: [{k: v for k, v in x.items() if not k.startswith("_")} for x in store(s).values()
                               if s._match(x, query)]}, {}
        return handler

    def _create_listener(self, query, body):
        item, listener = self._octavia_new(body, "listener", ("protocol", "protocol_port", "loadbalancer_id"))
        lb = self._lb_of(item["loadbalancer_id"])
        if item["protocol"] not in ("TCP", "UDP", "HTTP", "HTTPS", "TERMINATED_HTTPS", "SCTP", "PROMETHEUS"):
            raise self._octavia_error(400, f"Invalid input for field/attribute protocol. Value: '{item['protocol']}'.")
        if any(x["_lb"] == lb["id"] and x["protocol_port"] == item["protocol_port"] for x in self.listeners.values()):
            raise self._octavia_error(409, f"Another Listener on this Load Balancer is already using protocol_port "
                                           f"{item['protocol_port']}")
        self._change(lb)
        listener.update(protocol=item["protocol"], protocol_port=int(item["protocol_port"]), default_pool_id=None,
                        loadbalancers=[{"id": lb["id"]}], connection_limit=-1, _lb=lb["id"])
        self.listeners[listener["id"]] = listener
        return 201, {"listener": {k: v for k, v in listener.items() if not k.startswith("_")}}, {}

    def _create_pool(self, query, body):
        item, pool = self._octavia_new(body, "pool", ("protocol", "lb_algorithm"))
        listener = self.listeners.get(item.get("listener_id") or "")
        if listener is None:
            raise self._octavia_error(400, "Validation failure: a listener_id or loadbalancer_id is required.")
        if item["lb_algorithm"] not in ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"):
            raise self._octavia_error(400, f"Invalid input for field/attribute lb_algorithm.")
        if item["protocol"] != listener["protocol"]:
            raise self._octavia_error(400, "Validation failure: The pool protocol is not compatible with the listener.")
        lb = self._lb_of(listener["_lb"])
        self._change(lb)
        pool.update(protocol=item["protocol"], lb_algorithm=item["lb_algorithm"], listeners=[{"id": listener["id"]}],
                    loadbalancers=[{"id": lb["id"]}], members=[], healthmonitor_id=None, session_persistence=None,
                    _lb=lb["id"])
        listener["default_pool_id"] = pool["id"]
        self.pools[pool["id"]] = pool
        return 201, {"pool": {k: v for k, v in pool.items() if not k.startswith("_")}}, {}

    def _pool_of(self, pool_id):
        pool = self.pools.get(pool_id)
        if pool is None:
            raise self._octavia_error(404, f"Pool {pool_id} not found.")
        return pool

    def _list_members(self, query, body, pool_id):
        self._pool_of(pool_id)
        return 200, {"members": [{k: v for k, v in m.items() if not k.startswith("_")} for m in self.members.values()
                                 if m["_pool"] == pool_id and self._match(m, query)]}, {}

    def _create_member(self, query, body, pool_id):
        pool = self._pool_of(pool_id)
        item, member = self._octavia_new(body, "member", ("address", "protocol_port"))
        try:
            ipaddress.ip_address(item["address"])
        except ValueError:
            raise self._octavia_error(400, f"Invalid input for field/attribute address. Value: '{item['address']}'.") from None
        if item.get("subnet_id") and item["subnet_id"] not in self.subnets:
            raise self._octavia_error(400, f"Validation failure: Subnet {item['subnet_id']} not found.")
        if any(m["_pool"] == pool_id and m["address"] == item["address"] and m["protocol_port"] == item["protocol_port"]
               for m in self.members.values()):
            raise self._octavia_error(409, f"Duplicate member {item['address']}:{item['protocol_port']} in pool")
        self._change(self._lb_of(pool["_lb"]))
        member.update(address=item["address"], protocol_port=int(item["protocol_port"]), subnet_id=item.get("subnet_id"),
                      weight=1, backup=False, monitor_address=None, monitor_port=None, operating_status="NO_MONITOR",
                      _pool=pool_id, _lb=pool["_lb"])
        self.members[member["id"]] = member
        pool["members"].append({"id": member["id"]})
        return 201, {"member": {k: v for k, v in member.items() if not k.startswith("_")}}, {}

    def _delete_member(self, query, body, pool_id, member_id):
        """Octavia's DELETE .../pools/{pool_id}/members/{member_id}: 404 for a member not in
        the pool, 409 while the load balancer is not ACTIVE, else 204 and the member goes."""
        pool = self._pool_of(pool_id)
        member = self.members.get(member_id)
        if member is None or member["_pool"] != pool_id:
            raise self._octavia_error(404, f"Member {member_id} not found.")
        self._change(self._lb_of(pool["_lb"]))
        del self.members[member_id]
        pool["members"].remove({"id": member_id})
        return 204, None, {}

    def _create_health_monitor(self, query, body):
        item, hm = self._octavia_new(body, "healthmonitor", ("pool_id", "type", "delay", "timeout", "max_retries"))
        pool = self._pool_of(item["pool_id"])
        if pool["healthmonitor_id"]:
            raise self._octavia_error(409, f"This pool {pool['id']} already has a health monitor")
        if item["type"] not in ("HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO", "UDP-CONNECT", "SCTP"):
            raise self._octavia_error(400, f"Invalid input for field/attribute type. Value: '{item['type']}'.")
        if int(item["timeout"]) > int(item["delay"]):
            raise self._octavia_error(400, "Validation failure: The delay must be greater than or equal to the timeout.")
        self._change(self._lb_of(pool["_lb"]))
        hm.update(type=item["type"], delay=int(item["delay"]), timeout=int(item["timeout"]),
                  max_retries=int(item["max_retries"]), max_retries_down=3, pools=[{"id": pool["id"]}], _lb=pool["_lb"])
        self.health_monitors[hm["id"]] = hm
        pool["healthmonitor_id"] = hm["id"]
        return 201, {"healthmonitor": {k: v for k, v in hm.items() if not k.startswith("_")}}, {}

    def _get_child(self, store, key, kind):
        def handler(s, query, body, iid):
            x = store(s).get(iid)
            if x is None:
                raise s._octavia_error(404, f"{kind} {iid} not found.")
            return 200, {key: {k: v for k, v in x.items() if not k.startswith("_")}}, {}
        return handler

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
        (r"/compute/v2.1/servers/([^/]+)/action", "POST", "server_action", _force_delete),
        (r"/compute/v2.1/flavors/detail", "GET", "list_flavors", _flavors),
        (r"/compute/v2.1/flavors/([^/]+)", "GET", "get_flavor", _flavor),
        (r"/compute/v2.1/os-keypairs", "GET", "list_keypairs", _keypairs),
        (r"/compute/v2.1/os-keypairs", "POST", "create_keypair", _create_keypair),
        (r"/compute/v2.1/os-keypairs/([^/]+)", "GET", "get_keypair", _keypair),
        (r"/compute/v2.1/os-keypairs/([^/]+)", "DELETE", "delete_keypair", _delete_keypair),
        (r"/compute/v2.1/os-server-groups", "GET", "list_server_groups", _list_server_groups),
        (r"/compute/v2.1/os-server-groups", "POST", "create_server_group", _create_server_group),
        (r"/compute/v2.1/os-server-groups/([^/]+)", "GET", "get_server_group", _get_server_group),
        (r"/compute/v2.1/os-server-groups/([^/]+)", "DELETE", "delete_server_group", _delete_server_group),
        (r"/compute/v2.1/os-availability-zone", "GET", "list_availability_zones", _zones),
        (r"/image", "GET", None, lambda s, q, b: s._version_doc("image")),
        (r"/image/v2/images", "GET", "list_images", _images),
        (r"/image/v2/images/([^/]+)", "GET", "get_image", _image),
        (r"/network", "GET", None, lambda s, q, b: s._version_doc("network")),
        (r"/network/v2.0/networks", "GET", "list_networks", lambda s, q, b: s._collection(s.networks, "networks", q)),
        (r"/network/v2.0/networks", "POST", "create_network", _create_network),
        (r"/network/v2.0/networks/([^/]+)", "GET", "get_network",
         lambda s, q, b, i: s._item(s.networks, "network", i, "Network")),
        (r"/network/v2.0/networks/([^/]+)", "DELETE", "delete_network", _delete_network),
        (r"/network/v2.0/subnets", "GET", "list_subnets", lambda s, q, b: s._collection(s.subnets, "subnets", q)),
        (r"/network/v2.0/subnets", "POST", "create_subnet", _create_subnet),
        (r"/network/v2.0/subnets/([^/]+)", "GET", "get_subnet",
         lambda s, q, b, i: s._item(s.subnets, "subnet", i, "Subnet")),
        (r"/network/v2.0/subnets/([^/]+)", "DELETE", "delete_subnet", _delete_subnet),
        (r"/network/v2.0/ports", "GET", "list_ports", _list_ports),
        (r"/network/v2.0/ports", "POST", "create_port", _create_port),
        (r"/network/v2.0/ports/([^/]+)", "GET", "get_port", _get_port),
        (r"/network/v2.0/ports/([^/]+)", "PUT", "update_port", _update_port),
        (r"/network/v2.0/ports/([^/]+)", "DELETE", "delete_port", _delete_port),
        (r"/network/v2.0/routers", "GET", "list_routers", _list_routers),
        (r"/network/v2.0/routers", "POST", "create_router", _create_router),
        (r"/network/v2.0/routers/([^/]+)", "GET", "get_router", _get_router),
        (r"/network/v2.0/routers/([^/]+)", "PUT", "update_router", _update_router),
        (r"/network/v2.0/routers/([^/]+)", "DELETE", "delete_router", _delete_router),
        (r"/network/v2.0/routers/([^/]+)/add_router_interface", "PUT", "add_router_interface", _add_interface),
        (r"/network/v2.0/routers/([^/]+)/remove_router_interface", "PUT", "remove_router_interface", _remove_interface),
        (r"/network/v2.0/floatingips", "GET", "list_floating_ips", _list_fips),
        (r"/network/v2.0/floatingips", "POST", "create_floating_ip", _create_fip),
        (r"/network/v2.0/floatingips/([^/]+)", "GET", "get_floating_ip", _get_fip),
        (r"/network/v2.0/floatingips/([^/]+)", "PUT", "update_floating_ip", _update_fip),
        (r"/network/v2.0/floatingips/([^/]+)", "DELETE", "delete_floating_ip", _delete_fip),
        (r"/network/v2.0/(networks|subnets|ports|routers|floatingips|security-groups)/([^/]+)/tags", "PUT", "set_tags",
         _set_tags),
        (r"/network/v2.0/security-groups", "GET", "list_security_groups",
         lambda s, q, b: s._collection(s.groups, "security_groups", q)),
        (r"/network/v2.0/security-groups", "POST", "create_security_group", _create_group),
        (r"/network/v2.0/security-groups/([^/]+)", "GET", "get_security_group",
         lambda s, q, b, i: s._item(s.groups, "security_group", i, "SecurityGroup")),
        (r"/network/v2.0/security-groups/([^/]+)", "DELETE", "delete_security_group", _delete_group),
        (r"/network/v2.0/security-group-rules", "GET", "list_security_group_rules", _list_rules),
        (r"/network/v2.0/security-group-rules", "POST", "create_security_group_rule", _create_rule),
        (r"/network/v2.0/security-group-rules/([^/]+)", "DELETE", "delete_security_group_rule", _delete_rule),
        (r"/load-balancer", "GET", None, lambda s, q, b: s._version_doc("load-balancer")),
        (r"/load-balancer/v2(?:\.0)?", "GET", None, lambda s, q, b: s._version_doc("load-balancer")),
        (r"/load-balancer/v2(?:\.0)?/lbaas/loadbalancers", "GET", "list_load_balancers", _list_lbs),
        (r"/load-balancer/v2(?:\.0)?/lbaas/loadbalancers", "POST", "create_load_balancer", _create_lb),
        (r"/load-balancer/v2(?:\.0)?/lbaas/loadbalancers/([^/]+)", "GET", "get_load_balancer", _get_lb),
        (r"/load-balancer/v2(?:\.0)?/lbaas/loadbalancers/([^/]+)", "DELETE", "delete_load_balancer", _delete_lb),
        (r"/load-balancer/v2(?:\.0)?/lbaas/listeners", "GET", "list_listeners", _list_children(None, lambda s: s.listeners, "listeners")),
        (r"/load-balancer/v2(?:\.0)?/lbaas/listeners", "POST", "create_listener", _create_listener),
        (r"/load-balancer/v2(?:\.0)?/lbaas/listeners/([^/]+)", "GET", "get_listener",
         _get_child(None, lambda s: s.listeners, "listener", "Listener")),
        (r"/load-balancer/v2(?:\.0)?/lbaas/pools", "GET", "list_pools", _list_children(None, lambda s: s.pools, "pools")),
        (r"/load-balancer/v2(?:\.0)?/lbaas/pools", "POST", "create_pool", _create_pool),
        (r"/load-balancer/v2(?:\.0)?/lbaas/pools/([^/]+)", "GET", "get_pool", _get_child(None, lambda s: s.pools, "pool", "Pool")),
        (r"/load-balancer/v2(?:\.0)?/lbaas/pools/([^/]+)/members", "GET", "list_members", _list_members),
        (r"/load-balancer/v2(?:\.0)?/lbaas/pools/([^/]+)/members", "POST", "create_member", _create_member),
        (r"/load-balancer/v2(?:\.0)?/lbaas/pools/([^/]+)/members/([^/]+)", "DELETE", "delete_member", _delete_member),
        (r"/load-balancer/v2(?:\.0)?/lbaas/healthmonitors", "GET", "list_health_monitors",
         _list_children(None, lambda s: s.health_monitors, "healthmonitors")),
        (r"/load-balancer/v2(?:\.0)?/lbaas/healthmonitors", "POST", "create_health_monitor", _create_health_monitor),
        (r"/load-balancer/v2(?:\.0)?/lbaas/healthmonitors/([^/]+)", "GET", "get_health_monitor",
         _get_child(None, lambda s: s.health_monitors, "healthmonitor", "Health Monitor")),
    ]
