"""The deployment files: Dockerfile, .dockerignore, deploy/k8s (docs/deployment.md).

Nothing here builds the image or talks to a cluster (neither exists on the dev/CI machines).
The Kubernetes objects are validated against the Kubernetes JSON schemas
(``kubernetes-validate``, strict: an unknown field is an error), and checked for what a
user would notice first if it were wrong: probes and scrapes on the port the process serves,
a detector reading another shard's engine, a grabber sending to a port nobody binds, a
Secret or ConfigMap that no file defines, a config that does not load. The kustomizations
are rendered by a small renderer here (the subset of kustomize they use, checked), and by
``kubectl kustomize`` too where kubectl is installed, which must give the same objects. The
pods' command lines and those of docs/deployment.md go through `menet`'s own argument parser.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
BUILDS = {"base": K8S, "two-shards": K8S / "overlays" / "two-shards"}
# the oldest Kubernetes minor the manifests claim (docs/deployment.md), and the newest schema known
MIN_K8S = "1.30"
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}
GPU = "nvidia.com/gpu"

# a grabber's /health is 503 while its camera sends nothing (30 s); liveness on it would restart the
# pod, and the group's other cameras with it, for a camera outage: its liveness asks /metrics
LIVENESS_PATH = {"engine": "/health", "detector": "/health", "grabber": "/metrics"}


# ---------------------------------------------------------------- loading and rendering

def load_docs(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """RFC 6902 add / replace / remove, what the overlays use."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        kind = op["op"]
        if isinstance(node, list):
            if kind == "add":
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[int(last)] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[int(last)]
            else:
                raise AssertionError(f"unsupported patch op {kind}")
        else:
            if kind in ("add", "replace"):
                assert kind == "add" or last in node, f"replace of a missing {op['path']}"
                node[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[last]
            else:
                raise AssertionError(f"unsupported patch op {kind}")


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects of the kustomization in ``folder``: resources (files and folders), namespace, patches."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - KUSTOMIZE_KEYS
    assert not unknown, f"{folder}/kustomization.yaml uses {sorted(unknown)}: teach render() or kubectl only"
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        objects += render(path) if path.is_dir() else load_docs(path)
    if k.get("namespace"):
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    for p in k.get("patches", []):
        target, ops = p["target"], yaml.safe_load(p["patch"])
        hits = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        assert len(hits) == 1, f"{folder}: patch target {target} matches {len(hits)} objects"
        json_patch(hits[0], ops)
    return objects


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for o in objects:
        key = (o["kind"], o["metadata"]["name"])
        assert key not in out, f"{key} defined twice"
        out[key] = o
    return out


@pytest.fixture(scope="module")
def builds() -> dict[str, list[dict[str, Any]]]:
    return {name: render(folder) for name, folder in BUILDS.items()}


@pytest.fixture(scope="module")
def example_secrets() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in load_docs(SECRETS_EXAMPLE)}


# ---------------------------------------------------------------- reading the pods

def parse_args(args: list[str]) -> tuple[str, dict[str, list[str]]]:
    """(subcommand, {--flag: [values]}) from container args (``--flag=value`` or ``--flag value``)."""
    command, flags = args[0], {}
    i = 1
    while i < len(args):
        a = args[i]
        assert a.startswith("--"), f"unexpected argument {a!r} in {args}"
        if "=" in a:
            name, value = a.split("=", 1)
        else:
            name, value = a, args[i + 1]
            i += 1
        flags.setdefault(name, []).append(value)
        i += 1
    return command, flags


def one(flags: dict[str, list[str]], name: str) -> str:
    values = flags.get(name, [])
    assert len(values) == 1, f"{name}: expected once, got {values}"
    return values[0]


def tcp(endpoint: str) -> tuple[str, int]:
    u = urlsplit(endpoint)
    assert u.scheme == "tcp" and u.hostname and u.port, f"not tcp://HOST:PORT: {endpoint}"
    return u.hostname, u.port


def deployments(objects: list[dict[str, Any]], role: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"
            and (role is None or o["metadata"]["labels"]["app.kubernetes.io/component"] == role)]


def container(dep: dict[str, Any]) -> dict[str, Any]:
    cs = dep["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, f"{dep['metadata']['name']}: one container per pod expected"
    return cs[0]


def role_of(dep: dict[str, Any]) -> str:
    return dep["metadata"]["labels"]["app.kubernetes.io/component"]


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    assert port in named, f"container {c['name']}: no port named {port!r} ({sorted(named)})"
    return named[port]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def service_target(objects: list[dict[str, Any]], endpoint: str, port_name: str) -> tuple[dict[str, Any], int]:
    """The Deployment behind ``tcp://SERVICE[.NS...]:PORT`` and the container port it reaches."""
    host, port = tcp(endpoint)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    name = host.split(".")[0]
    assert name in services, f"{endpoint}: no Service {name}"
    svc = services[name]
    ports = [p for p in svc["spec"]["ports"] if p["port"] == port]
    assert ports, f"{endpoint}: Service {name} has no port {port}"
    assert ports[0].get("name") == port_name, f"{endpoint}: Service {name} port {port} is not the {port_name} port"
    selected = [d for d in deployments(objects)
                if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
    assert len(selected) == 1, f"Service {name} selects {len(selected)} Deployments"
    return selected[0], port_number(container(selected[0]), ports[0].get("targetPort", port))


def mounts(dep: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(mount path, volume) of the container."""
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
    return [(m["mountPath"], vols[m["name"]]) for m in container(dep).get("volumeMounts", [])]


def volume_for(dep: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The volume that holds ``path`` in the container, and the path inside it."""
    hits = [(mp, v) for mp, v in mounts(dep) if path.startswith(mp.rstrip("/") + "/")]
    assert hits, f"{dep['metadata']['name']}: {path} is on no mounted volume"
    mp, v = max(hits, key=lambda h: len(h[0]))
    return v, path[len(mp.rstrip("/")) + 1:]


# ---------------------------------------------------------------- kustomizations and schemas

def test_kustomizations_list_every_manifest() -> None:
    for folder in [K8S / "base", *BUILDS.values()]:
        k = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert set(k) <= KUSTOMIZE_KEYS
        listed = {r for r in k["resources"] if not (folder / r).is_dir()}
        for r in k["resources"]:
            assert (folder / r).exists(), f"{folder}/kustomization.yaml lists {r}, which does not exist"
        present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml", SECRETS_EXAMPLE.name}
        assert listed == present, f"{folder}: listed {sorted(listed)} but the folder has {sorted(present)}"
    # the Secrets are never applied from the repository
    for folder in [K8S / "base", *BUILDS.values()]:
        k = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert SECRETS_EXAMPLE.name not in {Path(r).name for r in k["resources"]}


@pytest.mark.parametrize("version", [MIN_K8S, "latest"])
def test_objects_match_the_kubernetes_schemas(builds: dict[str, list[dict[str, Any]]], version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (the test extra)")
    v = kv.latest_version() if version == "latest" else version
    checked, problems = 0, []
    for name, objects in [*builds.items(), ("secrets.example.yaml", load_docs(SECRETS_EXAMPLE))]:
        for o in objects:
            try:
                kv.validate(o, v, strict=True)
            except (kv.ValidationError, kv.SchemaNotFoundError) as exc:
                problems.append(f"{name}: {o['kind']} {o['metadata'].get('name')}: {exc}")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 20


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_kubectl_kustomize_gives_the_same_objects(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations were rendered by this test's own renderer only")
    out = subprocess.run([kubectl, "kustomize", str(BUILDS[build])], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    rendered = by_key([d for d in yaml.safe_load_all(out.stdout) if d])
    ours = by_key(copy.deepcopy(builds[build]))
    assert sorted(rendered) == sorted(ours)
    for key, obj in ours.items():
        assert rendered[key] == obj, f"{build}: {key} differs between kubectl kustomize and render()"


# ---------------------------------------------------------------- what the pods do

@pytest.mark.parametrize("build", sorted(BUILDS))
def test_probes_and_scrape_annotations_name_the_metrics_port(builds: dict[str, list[dict[str, Any]]],
                                                             build: str) -> None:
    deps = deployments(builds[build])
    assert {role_of(d) for d in deps} == {"engine", "detector", "grabber"}
    for dep in deps:
        name, role, c = dep["metadata"]["name"], role_of(dep), container(dep)
        command, flags = parse_args(c["args"])
        assert command == role, f"{name}: runs `menet {command}`, labelled {role}"
        port = int(one(flags, "--metrics-port"))
        assert one(flags, "--metrics-host") == "0.0.0.0", f"{name}: probes and scrapes come from outside the pod"
        assert port_number(c, "metrics") == port
        if role == "grabber":  # port P for the first source, P+1 for the second, ...
            for i in range(1, len(flags["--source"])):
                assert port_number(c, f"metrics-{i}") == port + i, f"{name}: source {i}'s metrics port"
        probes = {k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c}
        assert {"readinessProbe", "livenessProbe"} <= set(probes), f"{name}: readiness and liveness probes"
        for kind, probe in probes.items():
            get = probe["httpGet"]
            assert port_number(c, get["port"]) == port, f"{name}: {kind} on port {get['port']}, metrics on {port}"
            want = LIVENESS_PATH[role] if kind == "livenessProbe" else "/health"
            assert get["path"] == want, f"{name}: {kind} asks {get['path']}, expected {want}"
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        assert ann.get("prometheus.io/scrape") == "true", name
        assert ann.get("prometheus.io/port") == str(port), f"{name}: scraped on {ann.get('prometheus.io/port')}"
        assert ann.get("prometheus.io/path") == "/metrics", name


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_one_pod_per_role_instance_and_the_engine_has_a_gpu(builds: dict[str, list[dict[str, Any]]],
                                                            build: str) -> None:
    for dep in deployments(builds[build]):
        name, res = dep["metadata"]["name"], container(dep)["resources"]
        # two engines, detectors or grabbers of one camera group at once would split or double streams
        assert dep["spec"]["replicas"] == 1, name
        assert dep["spec"]["strategy"]["type"] == "Recreate", name
        assert "memory" in res["requests"] and "memory" in res["limits"], f"{name}: memory requests and limits"
        assert "cpu" in res["requests"], f"{name}: a CPU request"
        if role_of(dep) == "engine":
            assert str(res["requests"].get(GPU)) == "1" and str(res["limits"].get(GPU)) == "1", \
                f"{name}: the engine requests one GPU"
        else:
            assert GPU not in res["requests"] and GPU not in res.get("limits", {}), name


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_endpoints_reach_the_right_pods(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = builds[build]
    engines, detectors = deployments(objects, "engine"), deployments(objects, "detector")
    engine_services = set()
    # every Service selects exactly one pod template, on ports its container declares
    for svc in (o for o in objects if o["kind"] == "Service"):
        for p in svc["spec"]["ports"]:
            dep, _ = service_target(objects, f"tcp://{svc['metadata']['name']}:{p['port']}", p["name"])
            if role_of(dep) == "engine":
                engine_services.add(svc["metadata"]["name"])
    for eng in engines:
        _, flags = parse_args(container(eng)["args"])
        host, _ = tcp(one(flags, "--snippets"))
        assert host == "0.0.0.0"
    # each detector reads the windows of the engine of its own shard, and each engine has one detector
    paired = []
    for det in detectors:
        _, flags = parse_args(container(det)["args"])
        eng, port = service_target(objects, one(flags, "--windows"), "windows")
        assert role_of(eng) == "engine", f"{det['metadata']['name']}: --windows reaches {eng['metadata']['name']}"
        _, eflags = parse_args(container(eng)["args"])
        assert tcp(one(eflags, "--windows"))[1] == port, "the engine binds its windows on another port"
        shard = det["metadata"]["labels"]["menet.io/shard"]
        assert eng["metadata"]["labels"]["menet.io/shard"] == shard, \
            f"{det['metadata']['name']} (shard {shard}) reads {eng['metadata']['name']}"
        paired.append(eng["metadata"]["name"])
        # and its event Service reaches the port it binds
        _, bind_port = tcp(one(flags, "--events"))
        svcs = [o for o in objects if o["kind"] == "Service"
                and selects(o["spec"]["selector"], det["spec"]["template"]["metadata"]["labels"])]
        assert len(svcs) == 1, f"{det['metadata']['name']}: one event Service"
        ev = [p for p in svcs[0]["spec"]["ports"] if p["name"] == "events"]
        assert ev and port_number(container(det), ev[0]["targetPort"]) == bind_port
    assert sorted(paired) == sorted(e["metadata"]["name"] for e in engines), "one detector per engine"
    # every grabber group sends to engines' snippet ports, and knows every engine (each stream to exactly one)
    for grab in deployments(objects, "grabber"):
        _, flags = parse_args(container(grab)["args"])
        targets = flags.get("--engine", [])
        assert targets, f"{grab['metadata']['name']}: no --engine"
        assert len(set(targets)) == len(targets), "an engine listed twice"
        for ep in targets:
            eng, port = service_target(objects, ep, "snippets")
            assert role_of(eng) == "engine", f"{ep} reaches {eng['metadata']['name']}"
            _, eflags = parse_args(container(eng)["args"])
            assert tcp(one(eflags, "--snippets"))[1] == port, f"{ep}: the engine binds its snippets elsewhere"
        assert {tcp(ep)[0].split(".")[0] for ep in targets} == engine_services, \
            f"{grab['metadata']['name']}: --engine lists {targets}, the engine Services are {sorted(engine_services)}"
        # the first engines keep their places (stream.transport.shards indexes this list)
        assert [tcp(ep)[0] for ep in targets] == sorted(tcp(ep)[0] for ep in targets)
    assert len(engines) == {"base": 1, "two-shards": 2}[build]


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_every_referenced_object_and_volume_exists(builds: dict[str, list[dict[str, Any]]], build: str,
                                                   example_secrets: dict[str, dict[str, Any]]) -> None:
    objects = builds[build]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not any(kind == "Secret" for kind, _ in names), "Secrets are created with kubectl, not applied from here"
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    for o in objects:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace") in namespaces, f"{o['kind']} {o['metadata']['name']}: namespace"
    for dep in deployments(objects):
        name, spec = dep["metadata"]["name"], dep["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        used = {m["name"] for m in container(dep).get("volumeMounts", [])}
        assert used <= set(vols), f"{name}: mounts {sorted(used - set(vols))}, which are no volumes"
        assert set(vols) <= used, f"{name}: volumes {sorted(set(vols) - used)} are never mounted"
        for v in vols.values():
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, f"{name}: ConfigMap {v['configMap']['name']}"
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, f"{name}: PVC {claim}"
            if "secret" in v:
                secret = v["secret"]["secretName"]
                assert secret in example_secrets, f"{name}: Secret {secret} is not in secrets.example.yaml"
                assert not v["secret"].get("optional"), f"{name}: a missing key Secret must stop the pod"
        for env in container(dep).get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in example_secrets, f"{name}: Secret {ref['name']}"
                assert ref["key"] in example_secrets[ref["name"]]["stringData"], f"{name}: {ref}"
        # $(VAR) in args must be an env var of the container, or Kubernetes passes it literally
        env_names = {e["name"] for e in container(dep).get("env", [])}
        for arg in container(dep)["args"]:
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                assert var in env_names, f"{name}: $({var}) in {arg!r} is no env var"


def _write_configs(objects: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    cm = by_key(objects)[("ConfigMap", "menet-config")]
    out = {}
    for key, text in cm["data"].items():
        (folder / key).write_text(text)
        out[key] = folder / key
    return out


def _needs_fleet_settings() -> None:
    from stream.settings import TransportSettings

    missing = [k for k in ("metrics_host", "engines", "shards") if k not in TransportSettings.__dataclass_fields__]
    if missing:
        pytest.skip(f"stream/settings.py TransportSettings lacks {missing} (being added with the per-role "
                    f"commands, `menet engine|detector|grabber`): the ConfigMap uses metrics_host")


def secret_file(dep: dict[str, Any], secrets: dict[str, dict[str, Any]], path: str | None, what: str) -> None:
    """``path`` (a key file named by a config) is a key of a Secret mounted in the pod."""
    name = dep["metadata"]["name"]
    assert path, f"{name}: {what} is not set"
    v, rel = volume_for(dep, path)
    assert "secret" in v, f"{name}: {what} {path} is not on a Secret volume"
    assert rel in secrets[v["secret"]["secretName"]]["stringData"], \
        f"{name}: {what} {path}: Secret {v['secret']['secretName']} has no key {rel}"


def secret_dir(dep: dict[str, Any], secrets: dict[str, dict[str, Any]], path: str | None, what: str) -> None:
    """``path`` (an allow-list folder) is a Secret of public ``*.key`` files mounted in the pod."""
    name = dep["metadata"]["name"]
    assert path, f"{name}: {what} is not set"
    hits = [v for mp, v in mounts(dep) if mp.rstrip("/") == path.rstrip("/")]
    assert hits and "secret" in hits[0], f"{name}: {what} {path} is not a mounted Secret"
    keys = secrets[hits[0]["secret"]["secretName"]]["stringData"]
    assert keys and all(k.endswith(".key") for k in keys), f"{name}: the allow-list holds public *.key files"


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_each_pod_loads_its_config_and_finds_its_files(builds: dict[str, list[dict[str, Any]]], build: str,
                                                       example_secrets: dict[str, dict[str, Any]],
                                                       tmp_path: Path) -> None:
    _needs_fleet_settings()
    from stream.settings import load_config

    objects = builds[build]
    files = _write_configs(objects, tmp_path)
    for dep in deployments(objects):
        name, role = dep["metadata"]["name"], role_of(dep)
        _, flags = parse_args(container(dep)["args"])
        vol, key = volume_for(dep, one(flags, "--config"))
        assert vol.get("configMap", {}).get("name") == "menet-config" and key in files, f"{name}: --config"
        cfg = load_config(files[key])
        sec, t = cfg.stream.security, cfg.stream.transport
        assert t.metrics_host == "0.0.0.0", f"{name}: {key} serves /health on {t.metrics_host}"
        assert not sec.allow_insecure_remote, f"{name}: {key} allows tcp without CURVE"
        if role in ("engine", "detector"):  # CURVE servers: they bind tcp on 0.0.0.0
            secret_file(dep, example_secrets, sec.curve_server_secret_file, f"{key}: curve_server_secret_file")
            secret_dir(dep, example_secrets, sec.curve_clients_dir, f"{key}: curve_clients_dir")
            vol, _ = volume_for(dep, one(flags, "--checkpoint"))
            assert "persistentVolumeClaim" in vol, f"{name}: --checkpoint is not on the models volume"
        else:  # CURVE clients; the server's secret stays on the servers
            assert sec.curve_server_secret_file is None, f"{name}: a grabber holds no server key"
            secret_file(dep, example_secrets, sec.curve_client_secret_file, f"{key}: curve_client_secret_file")
            secret_file(dep, example_secrets, sec.curve_server_public_file, f"{key}: curve_server_public_file")
        if role == "engine":
            assert cfg.stream.runtime.device.startswith("cuda"), f"{name}: the engine runs on its GPU"
        if role == "detector":
            gpu = GPU in container(dep)["resources"]["requests"]
            assert gpu or cfg.stream.runtime.device == "cpu", f"{name}: CUDA without a GPU"


def test_every_role_runs_the_same_network(builds: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """The grabbers' preprocessing (data) and the engine/detector split (data, model) must agree."""
    _needs_fleet_settings()
    from stream.settings import load_config

    files = _write_configs(builds["base"], tmp_path)
    cfgs = {key: load_config(path) for key, path in files.items()}
    ref = cfgs["engine.yaml"]
    for key, cfg in cfgs.items():
        assert cfg.data == ref.data and cfg.model == ref.model, f"{key}: another network than engine.yaml"
    shipped = load_config("stream-gpu")
    assert ref.model == shipped.model, "the fleet runs stream-gpu's network"


def test_secrets_example_holds_placeholders_only(builds: dict[str, list[dict[str, Any]]],
                                                 example_secrets: dict[str, dict[str, Any]]) -> None:
    text = SECRETS_EXAMPLE.read_text()
    # `menet keys` files are ZeroMQ certificates: `public-key = "..."`, `secret-key = "..."`
    assert not re.search(r"(public|secret)-key\s*=", text), "key material in secrets.example.yaml"
    for name, s in example_secrets.items():
        for k, v in s["stringData"].items():
            assert v.startswith("PLACEHOLDER"), f"{name}.{k} is not a placeholder"
    referenced = set()
    for objects in builds.values():
        for dep in deployments(objects):
            spec = dep["spec"]["template"]["spec"]
            referenced |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
            referenced |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container(dep).get("env", [])
                           if "secretKeyRef" in e.get("valueFrom", {})}
    assert referenced == set(example_secrets), "secrets.example.yaml and the manifests name other Secrets"


def test_the_docs_create_every_secret_with_its_keys(example_secrets: dict[str, dict[str, Any]]) -> None:
    """docs/deployment.md's `kubectl create secret generic` lines make exactly the Secrets the pods mount."""
    doc = (REPO / "docs" / "deployment.md").read_text()
    lines = re.sub(r"\\\n\s*", " ", doc).splitlines()
    created: dict[str, set[str]] = {}
    for line in lines:
        m = re.search(r"kubectl(?:\s+-n\s+\S+)?\s+create\s+secret\s+generic\s+(\S+)(.*)", line)
        if not m:
            continue
        keys = set()
        for kind, value in re.findall(r"--from-(file|literal)=(\S+)", m.group(2)):
            if kind == "literal" or "=" in value:
                keys.add(value.split("=", 1)[0])
            else:
                keys.add(Path(value).name)
        created.setdefault(m.group(1), set()).update(keys)
    for name, s in example_secrets.items():
        assert name in created, f"docs/deployment.md never creates Secret {name}"
        assert created[name] == set(s["stringData"]), f"Secret {name}: docs create {sorted(created[name])}"


def _parse_with_menet(commands: list[tuple[str, list[str]]]) -> int:
    """Each (where, argv) through `menet`'s own argument parser; returns how many parsed (all, or it fails)."""
    from stream.cli import COMMANDS, build_parser

    parser = build_parser()
    failed, parsed = [], 0
    for where, argv in commands:
        if argv[0].replace("-", "_") not in COMMANDS:
            failed.append(f"{where}: menet {shlex.join(argv)}\n  no such command")
            continue
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(argv)
            parsed += 1
        except SystemExit:
            failed.append(f"{where}: menet {shlex.join(argv)}\n  {err.getvalue().strip().splitlines()[-1]}")
    assert not failed, "\n".join(failed)
    return parsed


def test_the_pods_command_lines_parse(builds: dict[str, list[dict[str, Any]]]) -> None:
    """The Deployments' args are a valid `menet` command line (ENTRYPOINT menet + args)."""
    pods = [(f"{build}: {d['metadata']['name']}", container(d)["args"])
            for build, objects in builds.items() for d in deployments(objects)]
    assert len(pods) >= 3  # engine, detector, a grabber group at least
    assert _parse_with_menet(pods) == len(pods)


def test_the_docs_command_lines_parse() -> None:
    """Every `menet ...` line of docs/deployment.md's shell blocks is a valid command line."""
    doc = (REPO / "docs" / "deployment.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", doc, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("menet "):
                commands.append((line[:60], shlex.split(line)[1:]))
    assert len(commands) >= 8
    assert _parse_with_menet(commands) == len(commands)


# ---------------------------------------------------------------- the image

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return out


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    global_args = {}
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m and m.group(2), f"every stage is named: FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda v: global_args.get(v.group(1), v.group(0)), m.group(1))
            current = stages[m.group(2)] = {"base": base, "steps": []}
        elif current is None:
            assert word == "ARG", f"{word} before the first FROM"
            name, _, value = rest.partition("=")
            global_args[name] = value
        else:
            current["steps"].append((word, rest))
    return stages


def chain(stages: dict[str, dict[str, Any]], name: str) -> list[tuple[str, str]]:
    """The steps in effect for a target: its base stages' first."""
    st = stages[name]
    return (chain(stages, st["base"]) if st["base"] in stages else [("FROM", st["base"])]) + st["steps"]


def dockerignored(rel: str, patterns: list[str]) -> bool:
    excluded = False
    for p in patterns:
        neg = p.startswith("!")
        p = p[1:] if neg else p
        p = p.rstrip("/")
        hit = fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch("/".join(rel.split("/")[:i]), p)
                                             for i in range(1, rel.count("/") + 1))
        if p.startswith("**/"):
            hit = hit or fnmatch.fnmatch(rel.split("/")[-1], p[3:])
        if hit:
            excluded = not neg
    return excluded


def test_dockerfile_has_a_cpu_and_a_cuda_target() -> None:
    stages = dockerfile_stages()
    assert {"cpu", "cuda"} <= set(stages)
    cpu, cuda = chain(stages, "cpu"), chain(stages, "cuda")
    assert cpu[0][1].startswith("python:3.11"), f"cpu: {cpu[0]}"
    assert cuda[0][1].startswith("nvidia/cuda:"), f"cuda: {cuda[0]}"
    cpu_text, cuda_text = " ".join(r for _, r in cpu), " ".join(r for _, r in cuda)
    assert "download.pytorch.org/whl/cpu" in cpu_text, "cpu: the CPU torch wheel"
    assert "download.pytorch.org/whl/cpu" not in cuda_text, "cuda: the default (CUDA) torch wheel"
    assert "python3.11 -m venv" in cuda_text, "cuda: Python 3.11"
    # the two images differ only in their bases
    assert stages["cpu"]["steps"] == stages["cuda"]["steps"]
    # torch goes in first (CPU wheel index, or the default CUDA wheel); pyproject's pin must then be
    # satisfied, else the dependency step replaces it with PyPI's default (CUDA) build in the CPU image
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = [d for d in deps if re.match(r"torch\b", d)]
    version = [r for w, r in dockerfile_instructions() if w == "ARG" and r.startswith("TORCH_VERSION=")]
    assert pin == [f"torch=={version[0].split('=', 1)[1]}"], f"Dockerfile {version} vs pyproject.toml {pin}"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_dockerfile_target_runs_menet_as_a_user(target: str) -> None:
    steps = chain(dockerfile_stages(), target)
    last = {word: rest for word, rest in steps}
    assert last.get("ENTRYPOINT") == '["menet"]', "ENTRYPOINT must be menet (exec form)"
    user = last.get("USER", "root").split(":")[0]
    assert user not in ("root", "0"), f"{target} runs as {user}"
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    manifests_uid = {d["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
                     for d in deployments(render(K8S))}
    assert manifests_uid == {int(user)}, "the pods run as the image's user"
    exposed = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert {5555, 5556, 5560, 9100} <= exposed
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install -e " in runs, "installed editable: the shipped configs stay next to the packages"


def test_dockerfile_copies_only_what_the_context_has() -> None:
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for must in (".git", ".venv", "runs", "build", "**/*.key_secret"):
        assert must in patterns, f".dockerignore must exclude {must}"
    copied = []
    for word, rest in dockerfile_instructions():
        if word in ("COPY", "ADD") and "--from=" not in rest:
            srcs = [s for s in rest.split() if not s.startswith("--")][:-1]
            copied += srcs
    assert copied, "no COPY from the context"
    for src in copied:
        assert not re.match(r"(\./)?(runs|\.venv|build|\.git|keys|tests)(/|$)", src), f"COPY {src}"
        assert src not in (".", "./"), "COPY . would take everything the context lets through"
        assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"
        assert not dockerignored(src.rstrip("/"), patterns), f"COPY {src}: .dockerignore excludes it"
    # setuptools reads the readme named in pyproject.toml
    assert "README.md" in copied and "pyproject.toml" in copied
