"""Schemathesis hooks for hack/schemathesis.sh.

The document (GET /openapi.json) states every rule of a single field. What it cannot state is
kept here, and only for requests Schemathesis means to be valid (its positive cases); the
requests it means to be invalid go out as generated:

- the rules between fields, which the document lists in its description: the namespace and name
  of a body are those of the path, traffic adds up to 100 with unique tags, minInstances is at
  most maxInstances, a request at most its limit, containers have unique names and with more than
  one exactly one has a port, runAsNonRoot comes with a runAsUser other than 0, and the
  annotations of one object stay under 256 KiB;
- the state of the server: a resource version or continue token names a version the store has
  written (one from the future is refused, and the document cannot know which exist);
- bodies go as JSON, never as PyYAML's YAML 1.1 (see `before_call`);
- billing's rules between fields: a UsageReport's name is made of its source, namespace, instance
  and window start, its namespace exists and its window is recent; a Budget's amount is more
  than zero, its thresholds increase and its webhook comes with a key from a namespace of its
  own tenant;
- a watch is a stream that never ends by itself, so every watch asks the server to end it after
  a second through the API's own `timeoutSeconds`.

An image upload's body (application/x-tar) is drawn by the strategy at the end: bytes, or small
tar archives of `docker save`'s file names with any content.

The watch stream itself (application/x-ndjson) is read by the deserializer below: every line
must be a WatchEvent.
"""

import hashlib
import io
import json
import re
import tarfile
import time

import schemathesis
from hypothesis import strategies as st

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

QUANTITY_FACTORS = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


def _truthy(value):
    # A repeated parameter comes as a list; the server refuses those, but it must not hang first.
    values = value if isinstance(value, list) else [value]
    return any(v is True or v in ("true", "1") for v in values)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quantity(text):
    if not isinstance(text, str):
        return float(text)
    text = text.lstrip("+")
    for suffix in sorted(QUANTITY_FACTORS, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)] or 0) * QUANTITY_FACTORS[suffix]
    return float(text)


def _revision_spec(spec):
    """Keeps a revision spec's cross-field rules: fixes what generation broke."""
    if not isinstance(spec, dict):
        return
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    seen = set()
    for i, c in enumerate(containers):
        if c.get("name") and c["name"] in seen:
            c["name"] = f"c{i}"
        seen.add(c.get("name"))
        security = c.get("securityContext")
        if isinstance(security, dict) and security.get("runAsNonRoot") is True and security.get("runAsUser") == 0:
            security["runAsUser"] = 1000
        resources = c.get("resources")
        if isinstance(resources, dict):
            limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
            for key in list(requests):
                if requests[key] is None or limits.get(key) is None:
                    continue
                if _quantity(requests[key]) > _quantity(limits[key]):
                    requests[key] = limits[key]
    if len(containers) > 1:
        with_port = [c for c in containers if c.get("ports")]
        for c in with_port[1:]:
            c["ports"] = []
        if not with_port:
            containers[0]["ports"] = [{"containerPort": 8080}]
    scaling = spec.get("scaling")
    if isinstance(scaling, dict) and _number(scaling.get("maxInstances")):
        if _number(scaling.get("minInstances")) and scaling["minInstances"] > scaling["maxInstances"]:
            scaling["minInstances"] = scaling["maxInstances"]


def _service_spec(spec):
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict):
        _revision_spec(template.get("spec"))
    traffic = [t for t in spec.get("traffic") or [] if isinstance(t, dict)]
    if traffic:
        for t in traffic:
            t["percent"] = 0
        traffic[0]["percent"] = 100
        tags = set()
        for i, t in enumerate(traffic):
            if t.get("tag"):
                if t["tag"] in tags:
                    t["tag"] = f"t{i}"
                tags.add(t["tag"])


def _label(value, fallback):
    return value if isinstance(value, str) and DNS_LABEL.match(value) else fallback


def _usage_report(case, body, spec):
    """A report of the last minute about an instance in the default namespace, named as the
    server names it (the path's name too: a replace names the object in its path)."""
    if not isinstance(spec, dict):
        return
    window_start = (int(time.time()) // 10 * 10 - 60) * 1000
    spec["namespace"] = "default"
    for field in ("source", "service", "revision", "instance"):
        spec[field] = _label(spec.get(field), "x")
    if spec.get("sourceKind") not in ("gateway", "agent"):
        spec["sourceKind"] = "gateway"
    if spec["sourceKind"] == "agent":
        spec["requests"] = 0
    spec["windowStart"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(window_start // 1000))
    spec["windowEnd"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(window_start // 1000 + 10))
    if isinstance(spec.get("periods"), list):
        spec["periods"] = [{"start": spec["windowStart"], "end": spec["windowEnd"]} for _ in spec["periods"][:3]]
    name = f"{spec['sourceKind']}.{spec['source']}.default.{spec['instance']}.{window_start}"
    if not isinstance(body.get("metadata"), dict):
        body["metadata"] = {}
    body["metadata"]["name"] = name
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = name


def _budget(spec):
    if not isinstance(spec, dict):
        return
    amount = spec.get("amount")
    if isinstance(amount, str) and not any(c in "123456789" for c in amount):
        spec["amount"] = "1"
    thresholds = spec.get("thresholds")
    if isinstance(thresholds, list) and all(_number(t) for t in thresholds):
        spec["thresholds"] = sorted(set(thresholds))
    url, ref = spec.get("webhookUrl"), spec.get("webhookSecretRef")
    if url:
        # The key comes from a namespace of the budget's own tenant: "default" is tenant
        # "default"'s.
        if not isinstance(ref, dict):
            ref = spec["webhookSecretRef"] = {"name": "hook", "key": "key"}
        ref["namespace"] = "default"
        spec["tenant"] = "default"
    elif ref:
        spec.pop("webhookSecretRef", None)


def _billing_tenant(spec):
    if isinstance(spec, dict) and "tenant" in spec:
        spec["tenant"] = _label(spec.get("tenant"), "acme")


def _body(case):
    body = case.body
    if not isinstance(body, dict):
        return
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for field in ("namespace", "name"):
            if case.path_parameters and field in case.path_parameters and meta.get(field):
                meta[field] = case.path_parameters[field]
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            while annotations and sum(len(k) + len(v or "") for k, v in annotations.items()) > 256 * 1024:
                annotations.pop(next(iter(annotations)))
    kind = body.get("kind")
    spec = body.get("spec")
    if kind == "Service":
        _service_spec(spec)
    elif kind in ("Revision", "Instance"):
        _revision_spec(spec)
    elif kind == "UsageReport":
        _usage_report(case, body, spec)
    elif kind == "Budget":
        _billing_tenant(spec)
        _budget(spec)
    elif kind in ("Invoice", "LedgerEntry"):
        _billing_tenant(spec)
    elif kind == "ServiceAccount" and isinstance(spec, dict):
        if spec.get("clusterRole") == "system:agent":
            if not spec.get("nodeName"):
                spec["nodeName"] = "n1"
        else:
            spec.pop("nodeName", None)
    elif kind == "RoleBinding" and isinstance(spec, dict):
        for subject in spec.get("subjects") or []:
            if isinstance(subject, dict) and subject.get("kind") != "ServiceAccount":
                subject.pop("namespace", None)


@schemathesis.hook
def before_call(context, case, kwargs):
    # The stateful phase generates valid requests only and may leave the mode out.
    positive = case.meta is None or case.meta.generation.mode.is_positive
    query = case.query
    if query is not None and _truthy(query.get("watch")):
        timeout = query.get("timeoutSeconds")
        if isinstance(timeout, str) and timeout.isdigit():
            timeout = int(timeout)
        if timeout is None or (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 1):
            query["timeoutSeconds"] = 1
    # A YAML body goes as JSON (which the document also declares): PyYAML writes YAML 1.1, where
    # a plain `1e+100` is a string, and the server reads YAML 1.2, where it is a number, so a
    # string field would receive a number the generator did not mean. The server's YAML is
    # tested on its own (apiserver/tests/http.rs, the CLI's manifests).
    if case.media_type and "yaml" in case.media_type:
        case.media_type = "application/json"
    if not positive:
        return
    if query is not None:
        # Versions that exist: 1 is the store's first write (the default namespace).
        if isinstance(query.get("resourceVersion"), str):
            query["resourceVersion"] = "1"
        token = query.get("continue")
        if isinstance(token, str) and "." in token:
            query["continue"] = "1." + token.split(".", 1)[1]
    _body(case)


@schemathesis.deserializer("application/x-ndjson")
def watch_events(ctx, response):
    for line in filter(None, response.content.decode("utf-8").split("\n")):
        event = json.loads(line)
        if not isinstance(event, dict) or event.get("type") not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"):
            raise ValueError(f"not a watch event: {line!r}")
        if not isinstance(event.get("object"), dict):
            raise ValueError(f"a watch event without an object: {line!r}")
    return response.content.decode("utf-8")


# ---------------------------------------------------------------- image uploads

@st.composite
def _tar_archives(draw):
    """Tar archives of a few files: `docker save`'s file names (manifest.json, index.json, a
    layer) or others, with any content: what the server makes of a broken archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        names = draw(st.lists(
            st.one_of(st.sampled_from(["manifest.json", "index.json", "oci-layout", "repositories",
                                       "blobs/sha256/00", "layer.tar", "config.json"]),
                      st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789./_-", min_size=1, max_size=40)),
            max_size=4, unique=True))
        for name in names:
            data = draw(st.one_of(st.binary(max_size=256),
                                  st.just(b'[{"Config":"config.json","RepoTags":["x:y"],"Layers":["layer.tar"]}]')))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _image_archive(layer_bytes):
    """A real `docker save` archive (the classic layout) of a one-layer image named
    schemathesis-probe:v1 whose layer holds one file with `layer_bytes`: an upload that
    succeeds (the image goes to the machine's registry under the namespace; a few KB)."""
    def tar_of(files):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    layer = tar_of([("probe", layer_bytes)])
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["schemathesis-probe:v1"],
                            "Layers": ["layer/layer.tar"]}]).encode()
    return tar_of([("manifest.json", manifest), ("config.json", config), ("layer/layer.tar", layer)])


# An upload's body: bytes that are no archive at all, tar archives of a few files, or a real
# (tiny) image.
schemathesis.openapi.media_type(
    "application/x-tar",
    st.one_of(st.binary(max_size=2048), _tar_archives(), st.binary(max_size=64).map(_image_archive)),
)
