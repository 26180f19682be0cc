"""A stand-in for the part of the Kubernetes API that cost-cleanup uses (no kube-apiserver, kind or
k3s installs offline here). The real `kubernetes` client talks to it through a kubeconfig.

It serves core/v1 namespaces, pods, persistentvolumeclaims and persistentvolumes, batch/v1 jobs and
cronjobs, apps/v1 deployments, statefulsets, daemonsets and replicasets: list (all namespaces or one,
with label selectors `k=v`, `k!=v`, `k`, `!k` and field selectors `metadata.name`,
`metadata.namespace`, `status.phase`), get, create, patch (JSON merge patch, strategic merge treated as
merge, JSON patch), delete with a resourceVersion precondition and propagation (a Job's pods, a
namespace's objects), and optimistic concurrency (a patch or delete naming an old resourceVersion
answers 409 Conflict).

What it does not do: authentication, admission, watches, defaulting and validation of objects, garbage
collection by ownerReferences beyond the two cases above, finalizers and graceful deletion (deletes are
immediate), subresources, server-side apply. A created object keeps the `creationTimestamp` it was
given, so seeded clusters can have old objects (a real API server stamps "now").
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# (group, plural) -> (kind, namespaced)
KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("", "namespaces"): ("Namespace", False),
    ("", "pods"): ("Pod", True),
    ("", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("", "persistentvolumes"): ("PersistentVolume", False),
    ("batch", "jobs"): ("Job", True),
    ("batch", "cronjobs"): ("CronJob", True),
    ("apps", "deployments"): ("Deployment", True),
    ("apps", "statefulsets"): ("StatefulSet", True),
    ("apps", "daemonsets"): ("DaemonSet", True),
    ("apps", "replicasets"): ("ReplicaSet", True),
}
API_VERSION = {"": "v1", "batch": "batch/v1", "apps": "apps/v1"}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove (what the client sends for a list body)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if op["op"] in ("add", "replace"):
            node[parts[-1]] = op["value"]
        elif op["op"] == "remove":
            node.pop(parts[-1], None)
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {op['op']!r}")
    return doc


def _selector_matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def _fields_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if (_field(obj, key.strip()) == value.strip()) == negate:
            return False
    return True


class Cluster:
    """The objects of one fake cluster, thread-safe, with a cluster-wide resourceVersion counter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self.version = 1
        self.writes = 0  # creates, patches and deletes served (a dry run must not add any)

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def create(
        self, group: str, plural: str, obj: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        kind, namespaced = KINDS[(group, plural)]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        key = (meta.get("namespace", "") if namespaced else "", meta["name"])
        with self.lock:
            if key in self.objects[(group, plural)]:
                raise ApiError(409, "AlreadyExists", f"{plural} {meta['name']!r} already exists")
            obj.setdefault("apiVersion", API_VERSION[group])
            obj.setdefault("kind", kind)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._stamp(obj)
            self.objects[(group, plural)][key] = obj
            self.writes += 1
            return copy.deepcopy(obj)

    def list(
        self, group: str, plural: str, namespace: str | None, labels: str, fields: str
    ) -> list[dict[str, Any]]:
        with self.lock:
            found = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self.objects[(group, plural)].items())
                if (namespace is None or ns == namespace)
                and _selector_matches(o["metadata"].get("labels") or {}, labels)
                and _fields_match(o, fields)
            ]
            return found

    def _key(self, group: str, plural: str, namespace: str | None, name: str) -> tuple[str, str]:
        key = (namespace or "", name)
        if key not in self.objects[(group, plural)]:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        return key

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(group, plural)][self._key(group, plural, namespace, name)])

    def patch(
        self, group: str, plural: str, namespace: str | None, name: str, body: Any, kind: str
    ) -> dict[str, Any]:
        with self.lock:
            key = self._key(group, plural, namespace, name)
            current = self.objects[(group, plural)][key]
            if kind == "json":
                updated = json_patch(current, body)
            else:
                wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
                if wanted and wanted != current["metadata"]["resourceVersion"]:
                    raise ApiError(
                        409,
                        "Conflict",
                        f'the object "{name}" has been modified; please apply '
                        "your changes to the latest version and try again",
                    )
                updated = merge_patch(current, body)
            updated["metadata"]["name"], updated["metadata"]["uid"] = name, current["metadata"]["uid"]
            self._stamp(updated)
            self.objects[(group, plural)][key] = updated
            self.writes += 1
            return copy.deepcopy(updated)

    def delete(
        self, group: str, plural: str, namespace: str | None, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        with self.lock:
            key = self._key(group, plural, namespace, name)
            current = self.objects[(group, plural)][key]
            wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{wanted}, ResourceVersion in object meta: {current['metadata']['resourceVersion']}",
                )
            del self.objects[(group, plural)][key]
            self.writes += 1
            if (group, plural) == ("batch", "jobs") and (body or {}).get("propagationPolicy") != "Orphan":
                pods = self.objects[("", "pods")]
                for pod_key in [
                    k
                    for k, p in pods.items()
                    if k[0] == key[0] and (p["metadata"].get("labels") or {}).get("job-name") == name
                ]:
                    del pods[pod_key]
            if (group, plural) == ("", "namespaces"):
                for (g, p), objects in self.objects.items():
                    if KINDS[(g, p)][1]:
                        for k in [k for k in objects if k[0] == name]:
                            del objects[k]
            return copy.deepcopy(current)


def _route(path: str) -> tuple[str, str, str | None, str | None]:
    """URL path -> (group, plural, namespace, name)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"no route {path}")
    if group == "" and rest[:1] == ["namespaces"] and len(rest) <= 2:
        return "", "namespaces", None, rest[1] if len(rest) == 2 else None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, plural, name = rest[1], rest[2], rest[3] if len(rest) > 3 else None
    else:
        namespace, plural, name = None, rest[0] if rest else "", rest[1] if len(rest) > 1 else None
    if (group, plural) not in KINDS:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    return group, plural, namespace, name


def make_handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _handle(self, method: str) -> None:
            try:
                split = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                if split.path in ("/version", "/version/"):
                    self._send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-scaleops-stand-in"})
                    return
                group, plural, namespace, name = _route(split.path)
                kind, namespaced = KINDS[(group, plural)]
                body = self._body()
                if method == "GET" and name is None:
                    items = cluster.list(
                        group,
                        plural,
                        namespace,
                        query.get("labelSelector", ""),
                        query.get("fieldSelector", ""),
                    )
                    self._send(
                        200,
                        {
                            "kind": f"{kind}List",
                            "apiVersion": API_VERSION[group],
                            "metadata": {"resourceVersion": str(cluster.version)},
                            "items": items,
                        },
                    )
                elif method == "GET":
                    self._send(200, cluster.get(group, plural, namespace, name or ""))
                elif method == "POST":
                    self._send(201, cluster.create(group, plural, body or {}, namespace))
                elif method == "PATCH":
                    content = self.headers.get("Content-Type", "")
                    patch_kind = "json" if "json-patch" in content else "merge"
                    self._send(200, cluster.patch(group, plural, namespace, name or "", body, patch_kind))
                elif method == "DELETE":
                    deleted = cluster.delete(group, plural, namespace, name or "", body or {})
                    self._send(
                        200,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Success",
                            "details": {"name": name, "kind": plural, "uid": deleted["metadata"]["uid"]},
                        },
                    )
                else:
                    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")
            except ApiError as exc:
                self._send(
                    exc.code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": exc.message,
                        "reason": exc.reason,
                        "code": exc.code,
                    },
                )

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._handle("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._handle("DELETE")

    return Handler


def write_kubeconfig(path: Path, url: str, context: str = "sandbox") -> Path:
    """A kubeconfig with one cluster, user and context pointing at `url` (no credentials)."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def serving(cluster: Cluster | None = None) -> Iterator[tuple[str, Cluster]]:
    """The stand-in on a free loopback port in a background thread: (its URL, its cluster)."""
    cluster = cluster or Cluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(cluster))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", cluster
    finally:
        server.shutdown()
        server.server_close()


def _ago(now: datetime, days: float) -> str:
    from datetime import timedelta

    return (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_demo(cluster: Cluster, now: datetime | None = None) -> None:
    """A small cluster with something for every Kubernetes policy of deployments/cost-policies.yml,
    protected objects and objects in use among them."""
    now = now or datetime.now(UTC)
    ago = lambda days: _ago(now, days)  # noqa: E731
    for name, notes in (
        ("kube-system", {}),
        ("default", {}),
        ("ci", {}),
        ("app", {}),
        ("preview-pr-101", {"janitor/ttl": "2d"}),  # created 3 days ago: expired
        ("preview-pr-207", {"janitor/ttl": "7d"}),
        ("demo-until-june", {"janitor/expires": "2026-06-30"}),
    ):
        cluster.create(
            "", "namespaces", {"metadata": {"name": name, "annotations": notes, "creationTimestamp": ago(3)}}
        )

    def job(ns: str, name: str, state: str | None, days: float, labels: dict[str, str] | None = None) -> None:
        status: dict[str, Any] = {"active": 1}
        if state:
            status = {"completionTime": ago(days), "conditions": [{"type": state, "status": "True"}]}
        meta = {"name": name, "namespace": ns, "creationTimestamp": ago(days + 0.1), "labels": labels or {}}
        cluster.create("batch", "jobs", {"metadata": meta, "status": status})

    job("ci", "migrate-1", "Complete", 3)
    job("ci", "nightly-report", "Failed", 2)
    job("ci", "build-42", None, 0.2)
    job("ci", "audit-export", "Complete", 9, {"scaleops/protect": "true"})
    job("kube-system", "cert-rotate", "Complete", 30)
    finished = {
        "phase": "Succeeded",
        "containerStatuses": [{"state": {"terminated": {"finishedAt": ago(3)}}}],
    }
    cluster.create(
        "",
        "pods",
        {
            "metadata": {"name": "migrate-1-x7k2p", "namespace": "ci", "labels": {"job-name": "migrate-1"}},
            "status": finished,
        },
    )
    mount = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}}]}
    cluster.create(
        "",
        "pods",
        {
            "metadata": {"name": "web-0", "namespace": "app"},
            "spec": mount,
            "status": {"phase": "Running", "startTime": ago(5)},
        },
    )
    for name, size, days in (("web-data", "20Gi", 40), ("old-export", "100Gi", 30), ("scratch", "5Gi", 1)):
        cluster.create(
            "",
            "persistentvolumeclaims",
            {
                "metadata": {"name": name, "namespace": "app", "creationTimestamp": ago(days)},
                "status": {"phase": "Bound", "capacity": {"storage": size}},
            },
        )
    cluster.create(
        "",
        "persistentvolumes",
        {
            "metadata": {"name": "pvc-released-1", "creationTimestamp": ago(12)},
            "spec": {"capacity": {"storage": "50Gi"}},
            "status": {"phase": "Released"},
        },
    )
    cluster.create(
        "",
        "persistentvolumes",
        {
            "metadata": {"name": "pvc-bound-1", "creationTimestamp": ago(12)},
            "spec": {"capacity": {"storage": "20Gi"}},
            "status": {"phase": "Bound"},
        },
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m scaleops.sandbox.kube_api --port P [--seed]`: serve the stand-in until killed."""
    import argparse

    parser = argparse.ArgumentParser(prog="scaleops.sandbox.kube_api", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", action="store_true", help="start with the demo cluster")
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.seed:
        seed_demo(cluster)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(cluster))
    print(f"Kubernetes API stand-in on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
