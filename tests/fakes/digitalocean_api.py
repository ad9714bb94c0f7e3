"""A DigitalOcean API v2 stand-in on loopback, for the real libcloud DigitalOcean driver.

No DigitalOcean API runs here, so this answers the calls provision makes with JSON shaped like
the API v2 reference: droplets (tags, `tag_name` filtering, status `new` then `active`,
networks v4 with a private and a public address once active), account SSH keys (MD5
fingerprints), cloud firewalls (with the add and remove rules calls,
`POST`/`DELETE /v2/firewalls/{id}/rules`, which touch only the rules named), images, regions and sizes, pagination by `page`/`per_page`
with `links.pages`, errors as `{"id": ..., "message": ...}` with the reference's status codes
(401, 404, 422). What the real API refuses and provision must not send is refused here too: a
droplet from a custom image without `ssh_keys`, a tag outside `[A-Za-z0-9_:-]`, a region,
size or image that does not exist or an image not in the region, user data over 64 KiB.

Faults: `inject("create_droplet", "fail" | "drop" | "throttle")` (a 422, a droplet made but a
500 answered, a 429); `calls` counts
requests by operation.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import itertools
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "do-test-token"
TAG = re.compile(r"^[A-Za-z0-9_:\-]{1,255}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,253}[A-Za-z0-9])?$")
FIREWALL_NAME = re.compile(r"^[A-Za-z0-9.\-]{1,255}$")


def _rule_identity(rule: dict[str, Any], where: str) -> tuple:
    """What makes two firewall rules the same rule: protocol, ports (tcp/udp without ports, or
    "0", is "all") and the non-empty lists of its sources or destinations."""
    ports = "" if rule.get("protocol") == "icmp" else str(rule.get("ports") or "all")
    ports = "all" if ports == "0" else ports
    target = rule.get(where) or {}
    return rule.get("protocol"), ports, tuple(sorted((k, tuple(sorted(map(str, v)))) for k, v in target.items() if v))
PORTS = re.compile(r"^(all|0|\d{1,5}(-\d{1,5})?)$")
CREATED_AT = "2026-11-28T00:00:00Z"
USER_DATA_MAX = 64 * 1024


class APIError(Exception):
    def __init__(self, status: int, ident: str, message: str):
        super().__init__(message)
        self.status, self.ident, self.message = status, ident, message


def fingerprint(public_key: str) -> str:
    """DigitalOcean's key fingerprint: MD5 of the key blob, colon-separated hex."""
    parts = public_key.split()
    if len(parts) < 2:
        raise APIError(422, "unprocessable_entity", "Key invalid type, we support 'ssh-rsa', 'ssh-dss', "
                       "'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521' or 'ssh-ed25519'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise APIError(422, "unprocessable_entity", "Key invalid, key should be of the form 'type key [comment]'") from None
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - the API's own fingerprint format
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class DigitalOceanAPI:
    """The stand-in server; `url`, `host`, `port` say where it listens."""

    def __init__(self, max_per_page: int = 200, polls_until_active: int = 1):
        self.max_per_page = max_per_page
        self.polls_until_active = polls_until_active
        self.lock = threading.RLock()
        self.ids = itertools.count(3164444)
        self.droplets: dict[int, dict[str, Any]] = {}
        self.polls: dict[int, int] = {}
        self.keys: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.tags: set[str] = set()
        self.created: list[dict[str, Any]] = []  # every accepted droplet create body
        self.calls: collections.Counter = collections.Counter()
        self.faults: dict[str, list[str]] = collections.defaultdict(list)
        self.regions = [self._region(slug, name) for slug, name in
                        (("nyc1", "New York 1"), ("ams3", "Amsterdam 3"), ("fra1", "Frankfurt 1"))]
        self.regions.append({**self._region("sfo1", "San Francisco 1"), "available": False})
        self.sizes = [self._size("s-1vcpu-1gb", 1024, 1, 25, 0.00893, 6.0),
                      self._size("s-2vcpu-4gb", 4096, 2, 80, 0.03571, 24.0),
                      self._size("s-4vcpu-8gb", 8192, 4, 160, 0.07143, 48.0)]
        self.images: list[dict[str, Any]] = [
            self._image(6918990, "22.04 (LTS) x64", "Ubuntu", "ubuntu-22-04-x64", True, "base"),
        ]
        self.number = itertools.count(101)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- fixtures ---------------------------------------------------------------------------
    def _region(self, slug: str, name: str) -> dict[str, Any]:
        return {"slug": slug, "name": name, "available": True,
                "sizes": [s for s in ("s-1vcpu-1gb", "s-2vcpu-4gb", "s-4vcpu-8gb")],
                "features": ["private_networking", "backups", "ipv6", "metadata", "image_transfer"]}

    def _size(self, slug, memory, vcpus, disk, hourly, monthly) -> dict[str, Any]:
        return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": 1.0,
                "price_hourly": hourly, "price_monthly": monthly, "available": True,
                "regions": ["nyc1", "ams3", "fra1"], "description": "Basic"}

    def _image(self, ident, name, distribution, slug, public, kind, regions=("nyc1", "ams3", "fra1")):
        return {"id": ident, "name": name, "distribution": distribution, "slug": slug, "public": public,
                "regions": list(regions), "created_at": CREATED_AT, "min_disk_size": 15,
                "size_gigabytes": 2.5, "type": kind, "status": "available", "tags": [], "description": ""}

    def add_custom_image(self, name: str, regions=("nyc1", "ams3", "fra1")) -> int:
        """A user-uploaded image (how Flatcar runs on DigitalOcean): type custom, not public."""
        with self.lock:
            ident = next(self.ids)
            self.images.append(self._image(ident, name, "Unknown", None, False, "custom", regions))
            return ident

    def add_droplet(self, name: str, tags=(), region="ams3", status="active") -> int:
        """A droplet made by someone else in the same account (not through provision)."""
        with self.lock:
            droplet = self._new_droplet({"name": name, "region": region, "size": "s-1vcpu-1gb",
                                         "image": self.images[0]["id"], "tags": list(tags)})
            droplet["status"] = status
            self._activate(droplet) if status == "active" else None
            return droplet["id"]

    def inject(self, operation: str, *faults: str) -> None:
        with self.lock:
            self.faults[operation].extend(faults)

    def _fault(self, operation: str) -> str | None:
        with self.lock:
            return self.faults[operation].pop(0) if self.faults[operation] else None

    # -- droplets ---------------------------------------------------------------------------
    def _find_image(self, ref: Any) -> dict[str, Any]:
        for image in self.images:
            if image["id"] == ref or (image["slug"] and image["slug"] == ref) or str(image["id"]) == str(ref):
                return image
        raise APIError(422, "unprocessable_entity", "You specified an invalid image for Droplet creation.")

    def _new_droplet(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not HOSTNAME.match(name):
            raise APIError(422, "unprocessable_entity", "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        region = next((r for r in self.regions if r["slug"] == body.get("region")), None)
        if region is None or not region["available"]:
            raise APIError(422, "unprocessable_entity", "You specified an invalid region for Droplet creation.")
        size = next((s for s in self.sizes if s["slug"] == body.get("size")), None)
        if size is None:
            raise APIError(422, "unprocessable_entity", "You specified an invalid size for Droplet creation.")
        image = self._find_image(body.get("image"))
        if region["slug"] not in image["regions"]:
            raise APIError(422, "unprocessable_entity", "You specified an invalid image for Droplet creation.")
        keys = body.get("ssh_keys") or []
        if image["type"] == "custom" and not keys:
            raise APIError(422, "unprocessable_entity",
                           "You must add an SSH key when creating a Droplet from a custom image.")
        for ref in keys:
            if not any(k["id"] == ref or k["fingerprint"] == ref for k in self.keys.values()):
                raise APIError(422, "unprocessable_entity", f"SSH key {ref} not found")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG.match(t) for t in tags):
            raise APIError(422, "unprocessable_entity",
                           "tags may contain letters, numbers, colons, dashes, and underscores; max 255")
        user_data = body.get("user_data")
        if user_data is not None and len(user_data.encode()) > USER_DATA_MAX:
            raise APIError(422, "unprocessable_entity", "user_data is too long (maximum is 65536 characters)")
        self.tags.update(tags)
        ident = next(self.ids)
        droplet = {"id": ident, "name": name, "memory": size["memory"], "vcpus": size["vcpus"],
                   "disk": size["disk"], "locked": False, "status": "new", "created_at": CREATED_AT,
                   "features": ["private_networking"], "backup_ids": [], "snapshot_ids": [],
                   "image": image, "size": size, "size_slug": size["slug"], "kernel": None,
                   "networks": {"v4": [], "v6": []}, "region": region, "tags": list(tags),
                   "volume_ids": [], "vpc_uuid": "5a4981aa-0000-4000-8000-000000000001",
                   "user_data": user_data, "ssh_keys": list(keys)}
        self.droplets[ident] = droplet
        self.polls[ident] = 0
        return droplet

    def _activate(self, droplet: dict[str, Any]) -> None:
        n = droplet["id"] % 250 + 1
        droplet["status"] = "active"
        droplet["networks"]["v4"] = [
            {"ip_address": f"10.110.0.{n}", "netmask": "255.255.240.0", "gateway": "10.110.0.1", "type": "private"},
            {"ip_address": f"203.0.113.{n}", "netmask": "255.255.255.0", "gateway": "203.0.113.1", "type": "public"}]

    def _poll(self, droplet: dict[str, Any]) -> dict[str, Any]:
        """Each read of a `new` droplet brings it closer to `active`, like a real boot."""
        if droplet["status"] == "new":
            self.polls[droplet["id"]] += 1
            if self.polls[droplet["id"]] > self.polls_until_active:
                self._activate(droplet)
        return {k: v for k, v in droplet.items() if k not in ("user_data", "ssh_keys")}

    # -- dispatch ---------------------------------------------------------------------------
    def _page(self, path: str, query: dict[str, list[str]], key: str, items: list) -> dict[str, Any]:
        per_page = max(1, min(int(query.get("per_page", ["20"])[0]), self.max_per_page))
        page = max(1, int(query.get("page", ["1"])[0]))
        last = max(1, -(-len(items) // per_page))
        body: dict[str, Any] = {key: items[(page - 1) * per_page: page * per_page],
                                "links": {}, "meta": {"total": len(items)}}

        def link(n: int) -> str:
            q = {k: v[0] for k, v in query.items()}
            q.update({"page": str(n), "per_page": str(per_page)})
            return f"{self.url}{path}?{urllib.parse.urlencode(q)}"
        pages = {}
        if page > 1:
            pages.update({"first": link(1), "prev": link(page - 1)})
        if page < last:
            pages.update({"next": link(page + 1), "last": link(last)})
        if pages:
            body["links"]["pages"] = pages
        return body

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v2"]:
            raise APIError(404, "not_found", "The resource you were accessing could not be found.")
        parts = parts[1:]
        with self.lock:
            if parts == ["droplets"] and method == "GET":
                self.calls["list_droplets"] += 1
                items = sorted(self.droplets.values(), key=lambda d: d["id"])
                tag = query.get("tag_name", [None])[0]
                if tag is not None:
                    items = [d for d in items if tag in d["tags"]]
                return 200, self._page(path, query, "droplets", [self._poll(d) for d in items])
            if parts == ["droplets"] and method == "POST":
                self.calls["create_droplet"] += 1
                fault = self._fault("create_droplet")
                if fault == "fail":
                    raise APIError(422, "unprocessable_entity", "Droplet limit exceeded (injected)")
                if fault == "throttle":
                    raise APIError(429, "too_many_requests", "API Rate limit exceeded.")
                droplet = self._new_droplet(body or {})
                self.created.append(dict(body))
                if fault == "drop":
                    raise APIError(500, "server_error", "Server was unable to give you a response. (injected)")
                return 202, {"droplet": self._poll(droplet) | {"status": "new", "networks": {"v4": [], "v6": []}},
                             "links": {"actions": [{"id": next(self.ids), "rel": "create",
                                                    "href": f"{self.url}/v2/actions/1"}]}}
            if len(parts) == 2 and parts[0] == "droplets":
                droplet = self.droplets.get(int(parts[1])) if parts[1].isdigit() else None
                if droplet is None:
                    raise APIError(404, "not_found", "The resource you were accessing could not be found.")
                if method == "GET":
                    return 200, {"droplet": self._poll(droplet)}
                if method == "DELETE":
                    self.calls["delete_droplet"] += 1
                    del self.droplets[droplet["id"]]
                    return 204, None
            if parts == ["account", "keys"] and method == "GET":
                return 200, self._page(path, query, "ssh_keys", sorted(self.keys.values(), key=lambda k: k["id"]))
            if parts == ["account", "keys"] and method == "POST":
                self.calls["create_key"] += 1
                name, public_key = (body or {}).get("name"), (body or {}).get("public_key")
                if not name or not public_key:
                    raise APIError(422, "unprocessable_entity", "Name can't be blank")
                fp = fingerprint(public_key)
                if any(k["fingerprint"] == fp for k in self.keys.values()):
                    raise APIError(422, "unprocessable_entity", "SSH Key is already in use on your account")
                key = {"id": next(self.ids), "fingerprint": fp, "public_key": public_key, "name": name}
                self.keys[key["id"]] = key
                return 201, {"ssh_key": key}
            if len(parts) == 3 and parts[:2] == ["account", "keys"]:
                key = next((k for k in self.keys.values() if str(k["id"]) == parts[2] or k["fingerprint"] == parts[2]), None)
                if key is None:
                    raise APIError(404, "not_found", "The resource you were accessing could not be found.")
                if method == "GET":
                    return 200, {"ssh_key": key}
                if method == "DELETE":
                    del self.keys[key["id"]]
                    return 204, None
            if parts == ["firewalls"] and method == "GET":
                return 200, self._page(path, query, "firewalls", list(self.firewalls.values()))
            if parts == ["firewalls"] and method == "POST":
                self.calls["create_firewall"] += 1
                firewall = self._new_firewall(body or {})
                return 202, {"firewall": firewall}
            if len(parts) == 3 and parts[0] == "firewalls" and parts[2] == "rules" and method in ("POST", "DELETE"):
                # add or remove access rules: the rules named in the body, the others untouched; 204
                firewall = self.firewalls.get(parts[1])
                if firewall is None:
                    raise APIError(404, "not_found", "The resource you were accessing could not be found.")
                self._check_rules(body or {})
                if not any((body or {}).get(d) for d in ("inbound_rules", "outbound_rules")):
                    raise APIError(422, "unprocessable_entity", "at least one rule must be given")
                self.calls["add_firewall_rules" if method == "POST" else "remove_firewall_rules"] += 1
                for direction, where in (("inbound_rules", "sources"), ("outbound_rules", "destinations")):
                    given = [_rule_identity(r, where) for r in (body or {}).get(direction) or []]
                    if method == "POST":
                        have = {_rule_identity(r, where) for r in firewall[direction]}
                        firewall[direction] += [r for r in (body or {}).get(direction) or []
                                                if _rule_identity(r, where) not in have]
                    else:
                        firewall[direction] = [r for r in firewall[direction] if _rule_identity(r, where) not in given]
                return 204, None
            if len(parts) == 2 and parts[0] == "firewalls":
                firewall = self.firewalls.get(parts[1])
                if firewall is None:
                    raise APIError(404, "not_found", "The resource you were accessing could not be found.")
                if method == "GET":
                    return 200, {"firewall": firewall}
                if method == "DELETE":
                    del self.firewalls[parts[1]]
                    return 204, None
                if method == "PUT":  # replaces name, rules and tags, with a create's checks
                    self.calls["update_firewall"] += 1
                    updated = self._new_firewall(body or {})
                    del self.firewalls[updated["id"]]
                    updated["id"] = parts[1]
                    self.firewalls[parts[1]] = updated
                    return 200, {"firewall": updated}
            if parts == ["images"] and method == "GET":
                items = self.images
                if query.get("private", [""])[0] == "true":
                    items = [i for i in items if not i["public"]]
                if query.get("type"):
                    kind = query["type"][0]
                    items = [i for i in items if (i["type"] == "base") == (kind == "distribution")]
                return 200, self._page(path, query, "images", items)
            if len(parts) == 2 and parts[0] == "images" and method == "GET":
                ref = int(parts[1]) if parts[1].isdigit() else parts[1]
                try:
                    return 200, {"image": self._find_image(ref)}
                except APIError:
                    raise APIError(404, "not_found", "The resource you were accessing could not be found.") from None
            if parts == ["regions"] and method == "GET":
                return 200, self._page(path, query, "regions", self.regions)
            if parts == ["sizes"] and method == "GET":
                return 200, self._page(path, query, "sizes", self.sizes)
        raise APIError(404, "not_found", "The resource you were accessing could not be found.")

    def _new_firewall(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not FIREWALL_NAME.match(name):
            raise APIError(422, "unprocessable_entity", "name must contain only alphanumeric characters, dashes, and periods")
        self._check_rules(body)
        for tag in body.get("tags") or []:
            if not TAG.match(tag):
                raise APIError(422, "unprocessable_entity", f"invalid tag {tag!r}")
        ident = f"bb4b2611-3d72-467b-8602-{next(self.ids):012d}"
        firewall = {"id": ident, "status": "succeeded", "created_at": CREATED_AT, "pending_changes": [],
                    "name": name, "inbound_rules": body.get("inbound_rules") or [],
                    "outbound_rules": body.get("outbound_rules") or [], "droplet_ids": body.get("droplet_ids") or [],
                    "tags": body.get("tags") or []}
        self.firewalls[ident] = firewall
        return firewall

    def _check_rules(self, body: dict[str, Any]) -> None:
        for direction, where in (("inbound_rules", "sources"), ("outbound_rules", "destinations")):
            for rule in body.get(direction) or []:
                protocol = rule.get("protocol")
                if protocol not in ("tcp", "udp", "icmp"):
                    raise APIError(422, "unprocessable_entity", f"{direction}: protocol must be tcp, udp or icmp")
                if protocol != "icmp" and not PORTS.match(str(rule.get("ports", ""))):
                    raise APIError(422, "unprocessable_entity", f"{direction}: ports must be a port, a range or 'all'")
                target = rule.get(where)
                if not isinstance(target, dict) or not any(target.get(k) for k in
                                                           ("addresses", "tags", "droplet_ids", "load_balancer_uids")):
                    raise APIError(422, "unprocessable_entity", f"{direction}: each rule needs {where}")
                for tag in target.get("tags") or []:
                    if not TAG.match(tag):
                        raise APIError(422, "unprocessable_entity", f"{direction}: invalid tag {tag!r}")

    # -- HTTP -------------------------------------------------------------------------------
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ratelimit-limit", "5000")
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"id": "unauthorized", "message": "Unable to authenticate you."})
                url = urllib.parse.urlsplit(self.path)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._answer(400, {"id": "bad_request", "message": "unparseable JSON body"})
                try:
                    status, payload = api.handle(method, url.path, urllib.parse.parse_qs(url.query), body)
                except APIError as err:
                    status, payload = err.status, {"id": err.ident, "message": err.message}
                self._answer(status, payload)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

            def do_PUT(self):
                self._serve("PUT")

        return Handler
