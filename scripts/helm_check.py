#!/usr/bin/env python3
"""Offline checks of the deployment files: the Helm chart (helm/dagg), the plain manifests
(k8s/) and the Dockerfile. Run through scripts/helm-check, which installs the tools.

- `helm lint --strict` (Helm v4 SDK) with the default values and every helm/dagg/ci/*-values.yaml.
- `helm template` with each of them; every rendered object is validated against the
  Kubernetes JSON schemas of 1.29 and the newest bundled version, strictly (unknown fields are
  errors); the ServiceMonitor against scripts/k8s-schemas/.
- What the objects must say to each other: the StatefulSet's pods get the peer list of all
  replicas (their stable DNS names, node id N+1 for pod N), each pod's advertised address is
  its own entry, Services select the pods and name existing ports, probes hit /health on the
  API port, the Secret holds a valid master key, the security context holds.
- The container command that derives the node id, run with sh.
- Bad values (helm/dagg/ci/bad/*.yaml) fail values.schema.json, naming the key.
- The Grafana dashboard uses only metrics the code registers (and names those it does not show).
- k8s/: the same schema validation and peer-list checks; the Secret from k8s/secret.sh.
- The Dockerfile: hadolint, and its user, ports and data directory match the chart.
- With a `dagg` built with the cluster options: three `dagg serve` processes started with the
  pods' rendered command and environment (stable names mapped to loopback ports) form one
  cluster, the Secret's admin password logs in, and one node's token works on the others.
- A node with the chart's environment under a read-only root (user and mount namespaces):
  it starts, writes through its API, and an API key scrapes /metrics.
- Every DAGG_* setting the chart passes is an option of `dagg serve` (node/src/serve.rs, and
  the built binary's --help when there is one) or a variable the code reads by name.

Prints one line per check and `N passed, M failed` at the end; exits 1 on any failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "dagg"
K8S = ROOT / "k8s"
SCHEMAS = ROOT / "scripts" / "k8s-schemas"
KUBE_VERSIONS = ["1.29.0", kv.latest_version()]
# Settings of `dagg serve` the chart passes as environment variables (secrets excluded: they
# are read from the environment by name, not options).
SERVE_OPTION_ENV = ["DAGG_NODE_ID", "DAGG_API_ADDR", "DAGG_PEER_ADDR", "DAGG_ADVERTISE_ADDR", "DAGG_DATA_DIR", "DAGG_PEERS", "DAGG_JOIN"]
# The peer port's mutual TLS and the API's TLS (issue 15).
TLS_OPTION_ENV = ["DAGG_PEER_CERT", "DAGG_PEER_KEY", "DAGG_PEER_CA", "DAGG_TLS_CERT", "DAGG_TLS_KEY"]
PEER_TLS_ENV = ["DAGG_PEER_CERT", "DAGG_PEER_KEY", "DAGG_PEER_CA"]
def metric_sources() -> list[Path]:
    """Every Rust source of the workspace's crates (metrics are registered by name there)."""
    return sorted(p for p in ROOT.glob("*/src/**/*.rs") if not p.is_relative_to(ROOT / "target"))


class CheckError(Exception):
    pass


def ensure(cond: Any, message: str) -> None:
    if not cond:
        raise CheckError(message)


# ---------------------------------------------------------------------------------------------
# Rendering and validation


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any] | None, name: str = "dagg", namespace: str = "dagg") -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=values, name=name, namespace=namespace, is_install=True)


def objects_of(rendered: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            ensure(isinstance(doc, dict), f"{path}: a document that is not an object")
            doc.setdefault("__source", path)
            out.append(doc)
    return out


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source"}


_own_schemas: dict[str, Any] = {}


def validate_object(obj: dict[str, Any], where: str) -> None:
    kind, api = obj.get("kind"), obj.get("apiVersion")
    own = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json", ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager.io-v1.json"}
    if (api, kind) in own:
        schema = _own_schemas.setdefault(kind, json.loads((SCHEMAS / own[(api, kind)]).read_text()))
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(clean(obj)), key=lambda e: list(e.path))
        ensure(not errors, f"{where}: {kind}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors))
        return
    for version in KUBE_VERSIONS:
        try:
            kv.validate(clean(obj), version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise CheckError(f"{where}: {kind} {obj['metadata'].get('name')}: Kubernetes {version}: {path}: {e.message}") from None
        except kv.SchemaNotFoundError as e:
            raise CheckError(f"{where}: no schema for {api} {kind} in Kubernetes {version}: {e}") from None


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    ensure(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0]


def container(sts: dict[str, Any]) -> dict[str, Any]:
    cs = sts["spec"]["template"]["spec"]["containers"]
    ensure(len(cs) == 1 and cs[0]["name"] == "dagg", "the StatefulSet runs one container named dagg")
    return cs[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def configmap_env(objs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """Variables the container gets from ConfigMaps of this rendering (envFrom)."""
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    out: dict[str, str] = {}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref and ref["name"] in cms:
            out.update(cms[ref["name"]].get("data", {}))
    return out


def effective_env(objs: list[dict[str, Any]], c: dict[str, Any], pod: str, namespace: str) -> dict[str, str]:
    """The environment a pod's container sees (plain values; envFrom first, env wins), with
    Kubernetes' $(VAR) expansion and the downward API fields used by the chart."""
    env: dict[str, str] = dict(configmap_env(objs, c))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
            field = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.name": pod, "metadata.namespace": namespace}[field]
    return env


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def host_of(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


def secret_named(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in by_kind(objs, "Secret") if s["metadata"]["name"] == name]
    ensure(len(found) == 1, f"expected one Secret {name}, found {len(found)} (Secrets: {[s['metadata']['name'] for s in by_kind(objs, 'Secret')]})")
    return found[0]


def credentials_secret(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Secret the pods read DAGG_MASTER_KEY from."""
    ref = env_of(container(one(objs, "StatefulSet")))["DAGG_MASTER_KEY"]["valueFrom"]["secretKeyRef"]
    return secret_named(objs, ref["name"])


def mounted_file(sts: dict[str, Any], path: str) -> tuple[str, str, bool] | None:
    """Where a file the container reads comes from: (Secret name, key, mounted read-only), for
    a path under a `secret` or `projected` volume; None when no such volume holds it."""
    c = container(sts)
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    for m in c.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(root):
            continue
        rel, vol = path[len(root):], volumes.get(m["name"], {})
        sources = [{"secret": {"name": vol["secret"]["secretName"], "items": vol["secret"].get("items")}}] if "secret" in vol else vol.get("projected", {}).get("sources", [])
        for src in sources:
            sec = src.get("secret")
            if not sec:
                continue
            if sec.get("items") is None:
                if "/" not in rel and "projected" not in vol:
                    return sec["name"], rel, m.get("readOnly") is True
            else:
                for item in sec["items"]:
                    if item["path"] == rel:
                        return sec["name"], item["key"], m.get("readOnly") is True
    return None


def volume_files(sts: dict[str, Any], secrets: dict[str, dict[str, Any]], volume: str) -> dict[str, bytes]:
    """The files of a `secret` or `projected` volume of the pod, from the given Secrets (as the
    kubelet would write them)."""
    vol = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}[volume]
    sources = [{"secret": {"name": vol["secret"]["secretName"], "items": vol["secret"].get("items")}}] if "secret" in vol else vol["projected"]["sources"]
    files: dict[str, bytes] = {}
    for src in sources:
        sec = src["secret"]
        ensure(sec["name"] in secrets, f"the pods mount the Secret {sec['name']}, which is not there")
        data = secrets[sec["name"]].get("data", {})
        items = sec.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            ensure(item["key"] in data, f"the Secret {sec['name']} has no key {item['key']}")
            files[item["path"]] = base64.b64decode(data[item["key"]])
    return files


def tls_handshake(ca: bytes, server: tuple[bytes, bytes], client: tuple[bytes, bytes] | None, hostname: str, client_ca: bytes | None = None) -> str | None:
    """A TLS handshake over a socket pair between a server that requires a client certificate
    signed by `ca` and a client that trusts `client_ca` (default `ca`), checks the server's
    name against `hostname` and presents `client` (cert, key) if given. None when both ends
    accept each other, else what failed."""
    with tempfile.TemporaryDirectory() as d:
        def write(name: str, data: bytes) -> str:
            Path(d, name).write_bytes(data)
            return str(Path(d, name))

        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(write("s.crt", server[0]), write("s.key", server[1]))
        sctx.load_verify_locations(cadata=ca.decode())
        sctx.verify_mode = ssl.CERT_REQUIRED
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.load_verify_locations(cadata=(client_ca or ca).decode())
        if client:
            cctx.load_cert_chain(write("c.crt", client[0]), write("c.key", client[1]))
        a, b = socket.socketpair()
        a.settimeout(10)
        b.settimeout(10)
        errors: list[str] = []

        def serve() -> None:
            try:
                with sctx.wrap_socket(a, server_side=True) as t:
                    t.sendall(b"ok")
            except (ssl.SSLError, OSError) as e:
                errors.append(f"server: {e}")

        th = threading.Thread(target=serve)
        th.start()
        try:
            with cctx.wrap_socket(b, server_hostname=hostname) as t:
                if t.recv(2) != b"ok":
                    errors.append("client: the server closed the connection")
        except (ssl.SSLError, OSError) as e:
            errors.append(f"client: {e}")
        th.join()
        a.close()
        b.close()
        return "; ".join(errors) or None


def pod_peer_tls(objs: list[dict[str, Any]], namespace: str, secrets: dict[str, dict[str, Any]], i: int) -> tuple[bytes, bytes, bytes]:
    """Pod i's peer certificate, key and CA, read from the Secrets its volumes mount."""
    sts = one(objs, "StatefulSet")
    env = effective_env(objs, container(sts), f"{sts['metadata']['name']}-{i}", namespace)
    out = []
    for var in PEER_TLS_ENV:
        src = mounted_file(sts, env[var])
        ensure(src, f"{var}={env[var]} is not a file of a mounted Secret")
        ensure(src[0] in secrets, f"{var}: the Secret {src[0]} is not there")
        ensure(src[1] in secrets[src[0]].get("data", {}), f"{var}: the Secret {src[0]} has no key {src[1]}")
        out.append(base64.b64decode(secrets[src[0]]["data"][src[1]]))
    return out[0], out[1], out[2]


def check_peer_certs(objs: list[dict[str, Any]], namespace: str, secrets: dict[str, dict[str, Any]]) -> None:
    """With the certificates at hand: every pod's certificate, key and CA make mutual TLS with
    the next pod for the name the pod advertises (what a connecting member checks), and not for
    another pod's name."""
    sts = one(objs, "StatefulSet")
    name, n = sts["metadata"]["name"], sts["spec"]["replicas"]
    c = container(sts)
    tls = [pod_peer_tls(objs, namespace, secrets, i) for i in range(n)]
    hosts = [host_of(effective_env(objs, c, f"{name}-{i}", namespace)["DAGG_ADVERTISE_ADDR"]) for i in range(n)]
    for i in range(n):
        j = (i + 1) % n
        err = tls_handshake(tls[i][2], (tls[i][0], tls[i][1]), (tls[j][0], tls[j][1]), hosts[i])
        ensure(err is None, f"pod {name}-{j} connecting to {name}-{i} at {hosts[i]}: {err}")
        ensure(tls[j][2] == tls[i][2], f"pods {name}-{i} and {name}-{j} trust the same CA")
        if n > 1:
            err = tls_handshake(tls[i][2], (tls[i][0], tls[i][1]), (tls[j][0], tls[j][1]), hosts[j])
            ensure(err is not None and "hostname" in err.lower(), f"pod {name}-{i}'s certificate must not pass for {hosts[j]}: {err}")
        err = tls_handshake(tls[i][2], (tls[i][0], tls[i][1]), None, hosts[i])
        ensure(err is not None, f"pod {name}-{i} accepts a client without a certificate")


# ---------------------------------------------------------------------------------------------
# The running of the container's command


def run_entrypoint(c: dict[str, Any], pod: str) -> subprocess.CompletedProcess[str]:
    """Runs the container's command as the image would, with a stand-in `dagg` first on PATH
    that prints the node id it got and its arguments."""
    with tempfile.TemporaryDirectory() as d:
        stand_in = Path(d) / "dagg"
        stand_in.write_text('#!/bin/sh\necho "node_id=$DAGG_NODE_ID args=$*"\n')
        stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
        argv = list(c.get("command", [])) + list(c.get("args", []))
        ensure(argv and argv[0] == "/bin/sh", f"the container command runs /bin/sh: {argv[:2]}")
        env = {"PATH": f"{d}:/usr/bin:/bin", "POD_NAME": pod}
        return subprocess.run(["sh"] + argv[1:], env=env, capture_output=True, text=True, timeout=10)


def check_node_ids(c: dict[str, Any], sts_name: str, replicas: int, extra_args: list[str]) -> None:
    for i in range(replicas):
        r = run_entrypoint(c, f"{sts_name}-{i}")
        ensure(r.returncode == 0, f"pod {sts_name}-{i}: the command failed: {r.stderr.strip()}")
        want = f"node_id={i + 1} args=serve" + "".join(" " + a for a in extra_args)
        ensure(r.stdout.strip() == want, f"pod {sts_name}-{i}: got `{r.stdout.strip()}`, want `{want}`")
    r = run_entrypoint(c, "dagg")
    ensure(r.returncode != 0 and "node id" in r.stderr, f"a pod name without an ordinal must fail clearly: rc={r.returncode} {r.stderr!r}")


# ---------------------------------------------------------------------------------------------
# The cluster wiring shared by the chart and the plain manifests


def check_cluster(objs: list[dict[str, Any]], namespace: str, replicas: int, short_names: bool, extra_args: list[str]) -> None:
    sts = one(objs, "StatefulSet")
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    ensure(spec["replicas"] == replicas, f"StatefulSet replicas {spec['replicas']}, want {replicas}")
    ensure(spec.get("podManagementPolicy") == "Parallel", "pods must start in parallel (a Raft majority elects the leader)")
    pod_labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    ensure(all(pod_labels.get(k) == v for k, v in selector.items()), "the StatefulSet's selector matches its pod labels")
    c = container(sts)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    ensure({"http", "peer"} <= set(ports), f"container ports http and peer: {ports}")

    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    headless = services.get(spec["serviceName"])
    ensure(headless is not None, f"the StatefulSet's serviceName {spec['serviceName']} is a Service of the rendering")
    ensure(headless["spec"].get("clusterIP") == "None", "the peers' Service is headless")
    ensure(headless["spec"].get("publishNotReadyAddresses") is True, "the peers' Service publishes not-ready pods (they must find each other to become ready)")
    for svc in services.values():
        sel = svc["spec"]["selector"]
        ensure(all(pod_labels.get(k) == v for k, v in sel.items()), f"Service {svc['metadata']['name']} selects the pods")
        for p in svc["spec"]["ports"]:
            ensure(p["targetPort"] in ports, f"Service {svc['metadata']['name']} targets port {p['targetPort']}, not a container port")
    peer_svc_port = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
    ensure(peer_svc_port.get("peer") == ports["peer"], "the headless Service's peer port is the container's")

    domain = None
    expected = []
    envs = [effective_env(objs, c, f"{name}-{i}", namespace) for i in range(replicas)]
    for i, env in enumerate(envs):
        ensure(port_of(env["DAGG_API_ADDR"]) == ports["http"], f"DAGG_API_ADDR {env['DAGG_API_ADDR']} listens on the http port {ports['http']}")
        ensure(port_of(env["DAGG_PEER_ADDR"]) == ports["peer"], f"DAGG_PEER_ADDR {env['DAGG_PEER_ADDR']} listens on the peer port {ports['peer']}")
        ensure(not env["DAGG_API_ADDR"].startswith("127."), "the API listens beyond loopback in a pod")
        ensure(not env["DAGG_PEER_ADDR"].startswith("127."), "the peer port listens beyond loopback in a pod")
    peers = envs[0].get("DAGG_PEERS", "")
    ensure(all(e.get("DAGG_PEERS") == peers for e in envs), "every pod gets the same peer list")
    entries = dict(p.split("=", 1) for p in peers.split(",")) if peers else {}
    ensure(sorted(entries, key=int) == [str(i + 1) for i in range(replicas)], f"DAGG_PEERS names node ids 1..{replicas}: {peers}")
    for i in range(replicas):
        host, port = entries[str(i + 1)].rsplit(":", 1)
        ensure(int(port) == ports["peer"], f"peer {i + 1} on port {port}, want {ports['peer']}")
        if short_names:
            want = f"{name}-{i}.{headless['metadata']['name']}"
        else:
            labels = host.split(".")
            ensure(len(labels) >= 5 and labels[3] == "svc", f"peer {i + 1}: `{host}` is not <pod>.<service>.<namespace>.svc.<domain>")
            domain = ".".join(labels[4:])
            want = f"{name}-{i}.{headless['metadata']['name']}.{namespace}.svc.{domain}"
        ensure(host == want, f"peer {i + 1} is `{host}`, the stable name of pod {name}-{i} is `{want}`")
        ensure(envs[i]["DAGG_ADVERTISE_ADDR"] == entries[str(i + 1)], f"pod {name}-{i} advertises `{envs[i]['DAGG_ADVERTISE_ADDR']}`, its peer entry is `{entries[str(i + 1)]}`")
        expected.append(want)
    check_node_ids(c, name, replicas, extra_args)

    # Data directory, /tmp and the security context.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    data_dir = envs[0]["DAGG_DATA_DIR"]
    ensure(data_dir in mounts, f"DAGG_DATA_DIR {data_dir} is a mounted volume")
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
    ensure(mounts[data_dir] in claims or mounts[data_dir] in volumes, f"the data volume {mounts[data_dir]} is a claim template or a volume")
    ensure("/tmp" in mounts and "emptyDir" in volumes.get(mounts["/tmp"], {}), "/tmp is a writable emptyDir")
    sc = c["securityContext"]
    psc = spec["template"]["spec"]["securityContext"]
    ensure(sc.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    ensure(sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True, "runs as non-root")
    ensure(sc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    ensure("ALL" in sc.get("capabilities", {}).get("drop", []), "drops all capabilities")
    ensure(psc.get("runAsUser", 0) != 0 and psc.get("fsGroup") is not None, "a non-root uid and an fsGroup for the data volume")
    ensure(spec["template"]["spec"].get("automountServiceAccountToken") is False, "no service account token in the pods")
    ensure(spec["template"]["spec"].get("enableServiceLinks") is False, "no service link variables (a Service named dagg-peers would set DAGG_PEERS_*)")
    for probe in ("livenessProbe", "readinessProbe"):
        p = c.get(probe)
        ensure(p is not None, f"{probe} is set")
        ensure(p["httpGet"]["path"] == "/health" and p["httpGet"]["port"] == "http", f"{probe} is GET /health on the http port")
    res = c.get("resources", {})
    ensure(res.get("requests") and res.get("limits", {}).get("memory"), "resource requests and a memory limit")

    # Secrets: every key the pods read is in a Secret of the rendering (or an existing one).
    secrets = {s["metadata"]["name"]: s for s in by_kind(objs, "Secret")}
    env = env_of(c)
    for var, key in [("DAGG_MASTER_KEY", "master-key"), ("DAGG_ADMIN_PASSWORD", "admin-password")]:
        ref = env[var]["valueFrom"]["secretKeyRef"]
        ensure(ref["key"] == key, f"{var} reads the key {key}")
        if ref["name"] in secrets:
            ensure(key in secrets[ref["name"]].get("data", {}), f"the Secret {ref['name']} holds {key}")
    token = env["DAGG_CLUSTER_TOKEN"]["valueFrom"]["secretKeyRef"]
    ensure(token["key"] == "cluster-token" and token.get("optional") is True, "DAGG_CLUSTER_TOKEN from the optional key cluster-token")
    if token["name"] in secrets:
        ensure("cluster-token" in secrets[token["name"]]["data"], "the Secret holds cluster-token")

    # The peer port's mutual TLS: every pod reads its own certificate and key, and the CA, from
    # a Secret volume mounted read-only (the keys are checked where the Secret is rendered).
    own = set()
    for i, e in enumerate(envs):
        ensure("DAGG_INSECURE_PEER" not in e and "--insecure-peer" not in extra_args, f"pod {name}-{i}: no --insecure-peer")
        for var in PEER_TLS_ENV:
            ensure(var in e, f"pod {name}-{i} gets {var} (mutual TLS on the peer port)")
            src = mounted_file(sts, e[var])
            ensure(src is not None, f"pod {name}-{i}: {var}={e[var]} is not a file of a mounted Secret volume")
            ensure(src[2], f"pod {name}-{i}: {var} comes from a volume mounted read-only")
            if src[0] in secrets:
                ensure(src[1] in secrets[src[0]].get("data", {}), f"pod {name}-{i}: {var} is the key {src[1]} of the Secret {src[0]}, which has no such key")
        own.add((mounted_file(sts, e["DAGG_PEER_CERT"]), mounted_file(sts, e["DAGG_PEER_KEY"])))
    ensure(len(own) == replicas, f"every pod reads a certificate and key of its own: {sorted(own)}")

    pdbs = by_kind(objs, "PodDisruptionBudget")
    if replicas > 1:
        ensure(len(pdbs) == 1, "a PodDisruptionBudget")
        pdb = pdbs[0]["spec"]
        ensure(all(pod_labels.get(k) == v for k, v in pdb["selector"]["matchLabels"].items()), "the PodDisruptionBudget selects the pods")
        ensure(isinstance(pdb.get("minAvailable"), int) and pdb["minAvailable"] >= replicas // 2 + 1, f"the PodDisruptionBudget keeps a majority: minAvailable {pdb.get('minAvailable')}")
    else:
        ensure(not pdbs, "no PodDisruptionBudget for a single node (it would block every drain)")


def check_master_key_text(text: str, where: str) -> None:
    """The rule of connectors/src/secrets.rs MasterKey::from_text: 64 hex digits, or base64
    (standard or URL-safe, padded) of 32 bytes."""
    t = text.strip()
    if len(t) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in t):
        return
    for alt in (None, b"-_"):
        try:
            raw = base64.b64decode(t, altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            continue
        ensure(len(raw) == 32, f"{where}: the master key decodes to {len(raw)} bytes; AES-256 needs 32")
        return
    raise CheckError(f"{where}: the master key is neither 64 hex digits nor base64 of 32 bytes")


def secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


# ---------------------------------------------------------------------------------------------
# The checks


CHECKS: list[tuple[str, Callable[[], None]]] = []


def check(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def add(f: Callable[[], None]) -> Callable[[], None]:
        CHECKS.append((name, f))
        return f

    return add


def ci_values() -> list[Path]:
    return sorted((CHART / "ci").glob("*-values.yaml"))


_render_cache: dict[str, list[dict[str, Any]]] = {}


def rendered_objects(values_file: Path | None, namespace: str) -> list[dict[str, Any]]:
    key = f"{values_file}:{namespace}"
    if key not in _render_cache:
        values = load_values(values_file) if values_file else None
        _render_cache[key] = objects_of(render(values, name="dagg", namespace=namespace))
    return _render_cache[key]


@check("helm lint --strict: default values and ci/*-values.yaml (Kubernetes 1.29)")
def _lint() -> None:
    for vf in [None] + ci_values():
        report = helm.lint(CHART, load_values(vf) if vf else None, strict=True, kube_version="v1.29.0")
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [{"error": e} for e in report.get("errors", [])]
        ensure(not bad, f"{vf.name if vf else 'default values'}: " + "; ".join(f"{m.get('path', '')}: {m['error']}" for m in bad))


@check("helm template, default values: every object valid for Kubernetes 1.29 and the newest schemas (strict); the NetworkPolicy and the peer certificate Secrets are among them")
def _validate_default() -> None:
    objs = rendered_objects(None, "dagg")
    kinds = sorted(o["kind"] for o in objs)
    ensure(kinds == sorted(["ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Secret", "Secret", "Service", "Service", "ServiceAccount", "StatefulSet"]), f"default objects: {kinds}")
    ensure(sorted(s["metadata"]["name"] for s in by_kind(objs, "Secret")) == ["dagg-peer-ca", "dagg-peer-tls", "dagg-secrets"], "the Secrets: credentials, the peer CA and the node certificates")
    for o in objs:
        validate_object(o, o["__source"])


@check("helm template, ci/*-values.yaml: every object valid (strict), ServiceMonitor included")
def _validate_ci() -> None:
    seen = set()
    for vf in ci_values():
        for o in rendered_objects(vf, "data-platform"):
            validate_object(o, f"{vf.name}: {o['__source']}")
            seen.add(o["kind"])
    for kind in ("Ingress", "ServiceMonitor", "Certificate", "ConfigMap", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim"):
        ensure(kind in seen, f"the ci values render a {kind}")


@check("default values: 3-node StatefulSet, every pod gets all three peers' stable names, node id N+1")
def _peers_default() -> None:
    objs = rendered_objects(None, "dagg")
    check_cluster(objs, "dagg", 3, short_names=False, extra_args=[])
    env = effective_env(objs, container(one(objs, "StatefulSet")), "dagg-0", "dagg")
    want = ",".join(f"{i + 1}=dagg-{i}.dagg-peers.dagg.svc.cluster.local:9001" for i in range(3))
    ensure(env["DAGG_PEERS"] == want, f"DAGG_PEERS is `{env['DAGG_PEERS']}`, want `{want}`")


@check("ci/test-values.yaml: 5 nodes, other namespace, domain and ports; extra args; existing Secret")
def _peers_ci() -> None:
    vf = CHART / "ci" / "test-values.yaml"
    v = load_values(vf)
    objs = rendered_objects(vf, "data-platform")
    check_cluster(objs, "data-platform", 5, short_names=False, extra_args=v["extraArgs"])
    sts = one(objs, "StatefulSet")
    c = container(sts)
    env = effective_env(objs, c, "analytics-dagg-4", "data-platform")
    ensure(env["DAGG_PEERS"].endswith("5=analytics-dagg-4.analytics-dagg-peers.data-platform.svc.k8s.internal:7000"), env["DAGG_PEERS"])
    ensure(env["DAGG_API_ADDR"] == "[::]:8080", f"IPv6 listen address: {env['DAGG_API_ADDR']}")
    ensure(not by_kind(objs, "Secret"), "an existing Secret: the chart creates none")
    ensure(all(e["valueFrom"]["secretKeyRef"]["name"] == "dagg-credentials" for n, e in env_of(c).items() if n in ("DAGG_MASTER_KEY", "DAGG_ADMIN_PASSWORD", "DAGG_JWT_SECRET")), "secrets from the existing Secret")
    ensure(env["DAGG_LOG"] == "debug" and env["DAGG_BODY_LIMIT"] == "4194304", "config values reach the pods")
    ensure("DAGG_ACCESS_TOKEN_TTL" in env_of(c) and "HTTPS_PROXY" in env_of(c), "extra env")
    ensure(c["envFrom"][-1] == {"secretRef": {"name": "dagg-connector-credentials"}}, "extra envFrom")
    pod = sts["spec"]["template"]["spec"]
    ensure(pod["nodeSelector"] == v["nodeSelector"] and pod["tolerations"] == v["tolerations"] and pod["affinity"] == v["affinity"], "scheduling values reach the pod")
    ensure(pod["topologySpreadConstraints"] == v["topologySpreadConstraints"] and pod["priorityClassName"] == "high-priority", "spread and priority")
    ensure(pod["serviceAccountName"] == "dagg-runner" and not by_kind(objs, "ServiceAccount"), "an existing ServiceAccount")
    ensure(c["image"] == "registry.internal/platform/dagg:0.1.0-rc1" and c["imagePullPolicy"] == "Always", f"image {c['image']}")
    ensure("startupProbe" not in c and c["livenessProbe"]["periodSeconds"] == 20, "probe settings")
    claim = sts["spec"]["volumeClaimTemplates"][0]
    ensure(claim["spec"]["storageClassName"] == "fast-ssd" and claim["spec"]["resources"]["requests"]["storage"] == "50Gi", "claim settings")
    ensure(sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete", "retention policy")
    ensure(env["DAGG_SHARED_DIR"] == "/shared", "DAGG_SHARED_DIR is the shared mount")
    shared = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    ensure(shared.get("shared") == "/shared" and vols["shared"]["persistentVolumeClaim"]["claimName"] == "dagg-checkpoints", "the existing shared claim is mounted")
    ensure(not by_kind(objs, "PersistentVolumeClaim"), "an existing shared claim: the chart creates none")
    ensure(shared.get("ca-bundle") == "/etc/ssl/internal" and "configMap" in vols["ca-bundle"], "extra volumes and mounts")
    pdb = one(objs, "PodDisruptionBudget")
    ensure(pdb["spec"]["minAvailable"] == 3, "the PodDisruptionBudget's minAvailable from the values")
    svc = [s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "analytics-dagg"][0]
    ensure(svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["ports"][0]["nodePort"] == 31443, "the API Service's type and node port")


@check("ci/test-values.yaml: Ingress with TLS reaches the API Service; ServiceMonitor scrapes each pod's /metrics with a token")
def _ingress_monitor() -> None:
    objs = rendered_objects(CHART / "ci" / "test-values.yaml", "data-platform")
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    ing = one(objs, "Ingress")
    ensure(ing["spec"]["ingressClassName"] == "nginx", "ingress class")
    rule_hosts = {r["host"] for r in ing["spec"]["rules"]}
    for t in ing["spec"]["tls"]:
        ensure(set(t["hosts"]) <= rule_hosts, f"TLS hosts {t['hosts']} are rule hosts")
    for r in ing["spec"]["rules"]:
        for p in r["http"]["paths"]:
            b = p["backend"]["service"]
            ensure(b["name"] in services, f"ingress backend {b['name']} is a Service")
            ensure(b["port"]["name"] in {sp["name"] for sp in services[b["name"]]["spec"]["ports"]}, "ingress backend port")
            ensure(services[b["name"]]["spec"].get("clusterIP") != "None", "the ingress goes to the API Service, not the headless one")
    sm = one(objs, "ServiceMonitor")
    ensure(sm["metadata"]["namespace"] == "monitoring" and sm["metadata"]["labels"]["release"] == "kube-prometheus-stack", "ServiceMonitor namespace and labels")
    matched = [s for s in services.values() if all(s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())]
    ensure(len(matched) == 1 and matched[0]["spec"].get("clusterIP") != "None", f"the ServiceMonitor selects exactly the API Service: {[s['metadata']['name'] for s in matched]}")
    ensure(sm["spec"]["namespaceSelector"]["matchNames"] == ["data-platform"], "the ServiceMonitor looks in the release's namespace")
    ep = sm["spec"]["endpoints"][0]
    ensure(ep["path"] == "/metrics" and ep["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}, "scrapes /metrics on a port of the Service")
    ensure(ep["authorization"]["credentials"] == {"name": "dagg-metrics-token", "key": "api-key"}, "the bearer token from the values")
    dash = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    ensure(len(dash) == 1 and dash[0]["metadata"]["labels"].get("grafana_dashboard") == "1", "the dashboard ConfigMap with the sidecar label")
    ensure(json.loads(dash[0]["data"]["dagg.json"]) == json.loads((CHART / "dashboards" / "dagg.json").read_text()), "the ConfigMap holds dashboards/dagg.json")


def check_network_policy(objs: list[dict[str, Any]], api_from: list[Any] | None, peer_from: list[Any], where: str) -> None:
    """The NetworkPolicy selects exactly the StatefulSet's pods and admits only the peer port
    (from those pods, namespace-local, plus `peer_from`) and the API port (from `api_from`;
    None: from anywhere)."""
    sts = one(objs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = sts["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in container(sts)["ports"]}
    np = one(objs, "NetworkPolicy")["spec"]
    ensure(np["podSelector"] == {"matchLabels": selector}, f"{where}: the NetworkPolicy selects the StatefulSet's pods by its selector: {np['podSelector']}")
    ensure(np.get("policyTypes") == ["Ingress"], f"{where}: an ingress policy")
    rules = {}
    for r in np["ingress"]:
        ensure(len(r["ports"]) == 1 and r["ports"][0].get("protocol", "TCP") == "TCP", f"{where}: one TCP port per rule: {r['ports']}")
        port = r["ports"][0]["port"]
        rules[ports.get(port, port)] = r
    ensure(set(rules) == {ports["peer"], ports["http"]}, f"{where}: rules for the peer and API ports only: {sorted(rules)}")
    got = rules[ports["peer"]].get("from")
    ensure(got, f"{where}: the peer port must not be open to everyone")
    first = got[0]
    ensure(set(first) == {"podSelector"} and first["podSelector"] == {"matchLabels": selector} and all(pod_labels.get(k) == v for k, v in selector.items()), f"{where}: the peer port from the StatefulSet's own pods (its selector, this namespace): {first}")
    ensure(got[1:] == peer_from, f"{where}: the peer port from nothing else than networkPolicy.peerFrom: {got[1:]}")
    ensure(rules[ports["http"]].get("from") == api_from, f"{where}: the API port from {api_from}: {rules[ports['http']].get('from')}")


@check("NetworkPolicy, on by default: the peer port only from the StatefulSet's own pods, the API port as configured (ci values too; off when disabled)")
def _network_policy() -> None:
    check_network_policy(rendered_objects(None, "dagg"), None, [], "default values")
    vf = CHART / "ci" / "test-values.yaml"
    v = load_values(vf)
    check_network_policy(rendered_objects(vf, "data-platform"), v["networkPolicy"]["apiFrom"], v["networkPolicy"]["peerFrom"], vf.name)
    ensure(not by_kind(rendered_objects(CHART / "ci" / "single-values.yaml", "dagg"), "NetworkPolicy"), "networkPolicy.enabled: false renders none")


@check("Secret: generated master key is base64 of 32 bytes, passwords long enough; given values used as given")
def _secrets() -> None:
    objs = rendered_objects(None, "dagg")
    s = credentials_secret(objs)
    check_master_key_text(secret_value(s, "master-key"), "generated")
    ensure(len(secret_value(s, "admin-password")) >= 16, "generated admin password length")
    ensure(len(secret_value(s, "cluster-token")) >= 32, "generated cluster token length")
    ensure(s["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep", "the Secret is kept on uninstall by default")
    again = credentials_secret(objects_of(render(None)))
    ensure(secret_value(again, "master-key") != secret_value(s, "master-key"), "two fresh installs get different master keys")
    vf = CHART / "ci" / "single-values.yaml"
    v = load_values(vf)
    s = credentials_secret(rendered_objects(vf, "dagg"))
    ensure(secret_value(s, "master-key") == v["auth"]["masterKey"], "the given master key")
    check_master_key_text(secret_value(s, "master-key"), "given")
    ensure(secret_value(s, "admin-password") == v["auth"]["adminPassword"], "the given admin password")
    ensure(secret_value(s, "cluster-token") == v["auth"]["clusterToken"], "the given cluster token")
    ensure("annotations" not in s["metadata"], "keepOnUninstall: false drops the keep policy")
    ensure(len(re.findall(r"lookup \"v1\" \"Secret\"", (CHART / "templates" / "secret.yaml").read_text())) == 1, "the Secret template reads the existing Secret back (lookup)")


def all_secrets(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in by_kind(objs, "Secret")}


@check("peer TLS, generated (default): a CA Secret never mounted, one certificate per pod naming its stable peer host; mutual TLS between pods, no other pod's name, no client without a certificate, no other CA")
def _peer_tls_generated() -> None:
    objs = rendered_objects(None, "dagg")
    sts = one(objs, "StatefulSet")
    secrets = all_secrets(objs)
    ca, nodes = secrets["dagg-peer-ca"], secrets["dagg-peer-tls"]
    ensure(ca["type"] == "kubernetes.io/tls" and set(ca["data"]) == {"tls.crt", "tls.key"}, f"the CA Secret holds the CA's certificate and key: {sorted(ca['data'])}")
    ensure(set(nodes["data"]) == {"ca.crt"} | {f"dagg-{i}.{x}" for i in range(3) for x in ("crt", "key")}, f"the node Secret: ca.crt and a certificate and key per pod: {sorted(nodes['data'])}")
    ensure(nodes["data"]["ca.crt"] == ca["data"]["tls.crt"], "the node Secret's ca.crt is the CA's certificate")
    ensure(b"PRIVATE KEY" in base64.b64decode(nodes["data"]["dagg-0.key"]), "node keys are PEM private keys")
    mounted = [v for v in sts["spec"]["template"]["spec"]["volumes"] if "dagg-peer-ca" in json.dumps(v)]
    ensure(not mounted, f"the CA's key is never mounted into a pod: {mounted}")
    check_peer_certs(objs, "dagg", secrets)
    # Another installation (another CA): its nodes are strangers.
    other = objects_of(render(None))
    stranger = pod_peer_tls(other, "dagg", all_secrets(other), 1)
    mine = pod_peer_tls(objs, "dagg", secrets, 0)
    ensure(stranger[2] != mine[2], "a fresh install makes a new CA")
    err = tls_handshake(mine[2], (mine[0], mine[1]), (stranger[0], stranger[1]), "dagg-0.dagg-peers.dagg.svc.cluster.local", client_ca=stranger[2] + mine[2])
    ensure(err is not None and "server" in err, f"a certificate from another CA is refused: {err}")
    # Kept across upgrades: both Secrets are read back from the cluster (lookup), and a kept
    # CA signs new pods' certificates (buildCustomCert).
    text = (CHART / "templates" / "peer-tls.yaml").read_text()
    ensure(text.count("lookup \"v1\" \"Secret\"") == 2 and "buildCustomCert" in text and "genSignedCert" in text and "genCA" in text, "peer-tls.yaml reads its Secrets back (lookup) and signs with the kept CA")
    api = (CHART / "templates" / "api-tls.yaml").read_text()
    ensure(api.count("lookup \"v1\" \"Secret\"") == 1, "api-tls.yaml reads its Secret back (lookup)")
    # Scaling to five: the same layout for the new pods.
    five = objects_of(render({"replicas": 5}))
    check_peer_certs(five, "dagg", all_secrets(five))


def render_upgrade(values: dict[str, Any] | None, cluster: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chart rendered as `helm upgrade` renders it against a cluster that holds the Secrets
    in `cluster`: the SDK renders without a cluster (its `lookup` finds nothing), so this
    renders a copy of the chart whose `lookup "v1" "Secret"` calls read those Secrets from a
    value instead."""
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d, "dagg")
        shutil.copytree(CHART, copy)
        n = 0
        for tpl in (copy / "templates").glob("*.yaml"):
            text, k = re.subn(r'lookup "v1" "Secret" (?:\$ns|\.Release\.Namespace) (\$\w+)', r'index $.Values.clusterSecrets \1', tpl.read_text())
            tpl.write_text(text)
            n += k
        ensure(n == 4, f"the chart's lookups of Secrets: {n}, want 4 (credentials, peer CA, peer certificates, API certificate)")
        schema = json.loads((copy / "values.schema.json").read_text())
        schema["properties"]["clusterSecrets"] = {"type": "object"}
        (copy / "values.schema.json").write_text(json.dumps(schema))
        secrets = {o["metadata"]["name"]: clean(o) for o in by_kind(cluster, "Secret")}
        with helm.Chart.load(copy) as chart:
            return objects_of(chart.render(values=(values or {}) | {"clusterSecrets": secrets}, name="dagg", namespace="dagg", is_upgrade=True))


@check("helm upgrade keeps the generated certificates (lookup): the same CA and pod certificates; scaling up signs only the new pod's, with the same CA; new names get new certificates; a lost CA makes all new")
def _peer_tls_upgrade() -> None:
    first = rendered_objects(None, "dagg")
    before = all_secrets(first)
    again = all_secrets(render_upgrade(None, first))
    for name in ("dagg-secrets", "dagg-peer-ca", "dagg-peer-tls"):
        ensure(again[name]["data"] == before[name]["data"], f"an upgrade keeps the Secret {name}")
    four = render_upgrade({"replicas": 4}, first)
    after = all_secrets(four)
    ensure(after["dagg-peer-ca"]["data"] == before["dagg-peer-ca"]["data"], "scaling up keeps the CA")
    for i in range(3):
        ensure(after["dagg-peer-tls"]["data"][f"dagg-{i}.crt"] == before["dagg-peer-tls"]["data"][f"dagg-{i}.crt"], f"scaling up keeps pod dagg-{i}'s certificate")
    ensure("dagg-3.crt" in after["dagg-peer-tls"]["data"], "scaling up signs a certificate for the new pod")
    check_peer_certs(four, "dagg", after)  # old and new pods' certificates work together
    moved = render_upgrade({"clusterDomain": "k8s.internal"}, first)
    got = all_secrets(moved)
    ensure(got["dagg-peer-ca"]["data"] == before["dagg-peer-ca"]["data"], "another cluster domain keeps the CA")
    ensure(all(got["dagg-peer-tls"]["data"][f"dagg-{i}.crt"] != before["dagg-peer-tls"]["data"][f"dagg-{i}.crt"] for i in range(3)), "another cluster domain: new certificates for the new names")
    check_peer_certs(moved, "dagg", got)
    lost = render_upgrade(None, [o for o in first if o["metadata"]["name"] != "dagg-peer-ca"])
    got = all_secrets(lost)
    ensure(got["dagg-peer-ca"]["data"] != before["dagg-peer-ca"]["data"] and got["dagg-peer-tls"]["data"]["dagg-0.crt"] != before["dagg-peer-tls"]["data"]["dagg-0.crt"], "a lost CA: a new CA and new certificates for all pods")
    check_peer_certs(lost, "dagg", got)
    api = {"api": {"tls": {"enabled": True}}}
    first = objects_of(render(api))
    kept = all_secrets(render_upgrade(api, first))["dagg-api-tls"]
    ensure(kept["data"] == all_secrets(first)["dagg-api-tls"]["data"], "an upgrade keeps the API certificate")
    renamed = all_secrets(render_upgrade({"api": {"tls": {"enabled": True, "extraDnsNames": ["dagg.example.org"]}}}, first))["dagg-api-tls"]
    ensure(renamed["data"]["tls.crt"] != kept["data"]["tls.crt"], "new API names: a new API certificate")


@check("peer TLS from an existing Secret (ci/single-values.yaml): the pods mount it and read their own files; no Secret rendered for it")
def _peer_tls_existing() -> None:
    objs = rendered_objects(CHART / "ci" / "single-values.yaml", "dagg")
    sts = one(objs, "StatefulSet")
    env = effective_env(objs, container(sts), "dagg-0", "dagg")
    ensure(mounted_file(sts, env["DAGG_PEER_CERT"])[:2] == ("dagg-node-certs", "dagg-0.crt"), f"the certificate of pod dagg-0 from the existing Secret: {mounted_file(sts, env['DAGG_PEER_CERT'])}")
    ensure(mounted_file(sts, env["DAGG_PEER_KEY"])[:2] == ("dagg-node-certs", "dagg-0.key"), "the key of pod dagg-0 from the existing Secret")
    ensure(mounted_file(sts, env["DAGG_PEER_CA"])[:2] == ("dagg-node-certs", "ca.crt"), "the CA from the existing Secret")
    names = {s["metadata"]["name"] for s in by_kind(objs, "Secret")}
    ensure(not names & {"dagg-peer-ca", "dagg-peer-tls", "dagg-node-certs"}, f"no peer certificate Secret rendered: {names}")
    ensure(not by_kind(objs, "Certificate"), "no cert-manager Certificate")


@check("peer TLS from cert-manager (ci/test-values.yaml): a Certificate per pod for its stable peer host (server and client auth) from the named issuer, projected into the pods")
def _peer_tls_cert_manager() -> None:
    vf = CHART / "ci" / "test-values.yaml"
    v = load_values(vf)
    objs = rendered_objects(vf, "data-platform")
    sts = one(objs, "StatefulSet")
    c = container(sts)
    certs = {o["metadata"]["name"]: o for o in by_kind(objs, "Certificate")}
    ensure(len(certs) == 5, f"five Certificates: {sorted(certs)}")
    cas = set()
    for i in range(5):
        pod = f"analytics-dagg-{i}"
        env = effective_env(objs, c, pod, "data-platform")
        host = host_of(env["DAGG_ADVERTISE_ADDR"])
        cert_src, key_src, ca_src = (mounted_file(sts, env[var]) for var in PEER_TLS_ENV)
        ensure(cert_src and key_src and ca_src, f"{pod}: the peer files are projected: {cert_src} {key_src} {ca_src}")
        ensure(env["DAGG_PEER_CERT"].startswith(v["peerTLS"]["mountPath"] + "/"), "mounted at peerTLS.mountPath")
        cert = certs.get(cert_src[0])
        ensure(cert is not None, f"{pod}: its certificate comes from {cert_src[0]}, which is no Certificate's Secret")
        spec = cert["spec"]
        ensure(spec["secretName"] == cert_src[0] == key_src[0] and (cert_src[1], key_src[1]) == ("tls.crt", "tls.key"), f"{pod}: tls.crt and tls.key of its Certificate's Secret")
        ensure(spec["dnsNames"] == [host] and "commonName" not in spec, f"{pod}: the Certificate names its stable peer host {host}: {spec['dnsNames']}")
        ensure({"server auth", "client auth"} <= set(spec["usages"]), f"{pod}: the certificate serves both ends of a connection: {spec['usages']}")
        ensure(spec["issuerRef"] == v["peerTLS"]["certManager"]["issuerRef"], f"{pod}: issuerRef from the values: {spec['issuerRef']}")
        ensure(spec["duration"] == "2160h" and spec["renewBefore"] == "360h", "duration and renewBefore from the values")
        ensure(ca_src[1] == "ca.crt" and ca_src[0] in certs, f"{pod}: the CA is the issuer's ca.crt in a Certificate's Secret: {ca_src}")
        cas.add(ca_src)
    ensure(len(cas) == 1, "every pod trusts the same CA file")
    ensure(not by_kind(objs, "Secret"), "no Secret rendered (cert-manager writes them)")


@check("API over TLS: DAGG_TLS_CERT/KEY from a read-only mount, probes and the ServiceMonitor on https; the generated certificate is valid for the Service's names; off by default")
def _api_tls() -> None:
    objs = rendered_objects(None, "dagg")
    c = container(one(objs, "StatefulSet"))
    ensure(not {"DAGG_TLS_CERT", "DAGG_TLS_KEY"} & set(env_of(c)), "no API TLS by default")
    ensure(all(c[p]["httpGet"].get("scheme") == "HTTP" for p in ("startupProbe", "livenessProbe", "readinessProbe")), "probes on http by default")
    for vf, ns in ((CHART / "ci" / "single-values.yaml", "dagg"), (CHART / "ci" / "test-values.yaml", "data-platform")):
        objs = rendered_objects(vf, ns)
        sts = one(objs, "StatefulSet")
        c = container(sts)
        env = effective_env(objs, c, f"{sts['metadata']['name']}-0", ns)
        srcs = [mounted_file(sts, env[var]) for var in ("DAGG_TLS_CERT", "DAGG_TLS_KEY")]
        ensure(all(srcs) and all(src[2] for src in srcs), f"{vf.name}: the API certificate and key from a read-only Secret volume: {srcs}")
        ensure([src[1] for src in srcs] == ["tls.crt", "tls.key"], f"{vf.name}: tls.crt and tls.key: {srcs}")
        for p in ("livenessProbe", "readinessProbe"):
            ensure(c[p]["httpGet"]["scheme"] == "HTTPS", f"{vf.name}: {p} over https")
        if vf.name == "test-values.yaml":
            ensure(srcs[0][0] == "dagg-api-cert", "the existing API certificate Secret")
            ep = one(objs, "ServiceMonitor")["spec"]["endpoints"][0]
            ensure(ep["scheme"] == "https" and ep["tlsConfig"]["serverName"] == "analytics-dagg.data-platform.svc", f"the ServiceMonitor scrapes over https for the Service's name: {ep}")
        else:
            secret = all_secrets(objs)[srcs[0][0]]
            data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
            ensure(secret["type"] == "kubernetes.io/tls" and set(data) == {"tls.crt", "tls.key", "ca.crt"}, f"the generated API Secret: {sorted(data)}")
            peer_ca = base64.b64decode(all_secrets(objs).get("dagg-peer-tls", {"data": {"ca.crt": ""}})["data"]["ca.crt"]) if "dagg-peer-tls" in all_secrets(objs) else b""
            ensure(data["ca.crt"] != peer_ca, "the API has a CA of its own, not the peer CA")
            for name in ("dagg.dagg.svc", "dagg.dagg.svc.cluster.local", "dagg", "localhost", "dagg.example.org"):
                err = tls_handshake(data["ca.crt"], (data["tls.crt"], data["tls.key"]), None, name)
                ensure(err is not None and "server" in err and "hostname" not in err.lower(), f"the API certificate for {name}: only the client certificate should be missing here: {err}")
            err = tls_handshake(data["ca.crt"], (data["tls.crt"], data["tls.key"]), None, "evil.example.org")
            ensure(err is not None and "hostname" in err.lower(), f"the API certificate is not valid for other names: {err}")
            monitored = objects_of(render({"api": {"tls": {"enabled": True}}, "serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "metrics", "key": "token"}}}))
            for o in monitored:
                validate_object(o, o["__source"])
            tls = one(monitored, "ServiceMonitor")["spec"]["endpoints"][0]["tlsConfig"]
            ensure(tls == {"serverName": "dagg.dagg.svc", "ca": {"secret": {"name": "dagg-api-tls", "key": "ca.crt"}}}, f"the ServiceMonitor trusts the generated API CA for the Service's name: {tls}")
            notes = render(load_values(vf))["dagg/templates/NOTES.txt"]
            ensure("https://127.0.0.1:8001/ui/" in notes and "jsonpath='{.data.ca\\.crt}'" in notes, f"NOTES.txt: https and how to get the API CA: {notes}")


@check("ci/single-values.yaml: one node, no persistence, no PodDisruptionBudget, hard anti-affinity, a shared volume")
def _single() -> None:
    vf = CHART / "ci" / "single-values.yaml"
    objs = rendered_objects(vf, "dagg")
    check_cluster(objs, "dagg", 1, short_names=False, extra_args=[])
    sts = one(objs, "StatefulSet")
    ensure("volumeClaimTemplates" not in sts["spec"], "no claims without persistence")
    pvc = one(objs, "PersistentVolumeClaim")
    ensure(pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == "nfs", "the shared claim is ReadWriteMany of the given class")
    c = container(sts)
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["shared"]
    ensure(vols["shared"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], "the pods mount the shared claim")
    ensure(effective_env(objs, c, "dagg-0", "dagg")["DAGG_SHARED_DIR"] == mount, "DAGG_SHARED_DIR is where the shared claim is mounted")
    ensure("requiredDuringSchedulingIgnoredDuringExecution" in sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"], "hard anti-affinity")


@check("cluster.join: the pods join a running cluster instead of getting a peer list (dagg serve takes one or the other)")
def _join() -> None:
    url = "http://dagg.analytics.svc.cluster.local:8001"
    join = {"cluster": {"join": url}, "peerTLS": {"source": "existingSecret", "existingSecret": "analytics-node-certs"}}
    objs = objects_of(render(join))
    for o in objs:
        validate_object(o, o["__source"])
    c = container(one(objs, "StatefulSet"))
    env = effective_env(objs, c, "dagg-1", "dagg")
    ensure(env.get("DAGG_JOIN") == url and "DAGG_PEERS" not in env, f"join mode: DAGG_JOIN and no DAGG_PEERS: {sorted(env)}")
    ensure(env["DAGG_ADVERTISE_ADDR"] == "dagg-1.dagg-peers.dagg.svc.cluster.local:9001", "a joining pod still advertises its stable name")
    env = effective_env(objs := rendered_objects(None, "dagg"), container(one(objs, "StatefulSet")), "dagg-1", "dagg")
    ensure("DAGG_JOIN" not in env, "no DAGG_JOIN by default")


@check("NOTES.txt: how to reach the UI and read the admin password")
def _notes() -> None:
    notes = render(None)["dagg/templates/NOTES.txt"]
    ensure("kubectl -n dagg port-forward svc/dagg 8001:8001" in notes and "http://127.0.0.1:8001/ui/" in notes, notes)
    ensure("kubectl -n dagg get secret dagg-secrets -o jsonpath='{.data.admin-password}' | base64 -d" in notes, notes)
    notes = render(load_values(CHART / "ci" / "test-values.yaml"), namespace="data-platform")["dagg/templates/NOTES.txt"]
    ensure("https://dagg.example.org/ui/" in notes and "get secret dagg-credentials" in notes, notes)
    notes = render({"replicas": 4})["dagg/templates/NOTES.txt"]
    ensure("even number" in notes, "an even replica count is warned about")


@check("values.schema.json: every helm/dagg/ci/bad/*.yaml fails, naming the bad key")
def _bad_values() -> None:
    files = sorted((CHART / "ci" / "bad").glob("*.yaml"))
    ensure(len(files) >= 10, f"bad value files: {len(files)}")
    for f in files:
        m = re.search(r"^# expect: (\S+)", f.read_text(), re.M)
        ensure(m, f"{f.name}: no `# expect: KEY` line")
        try:
            render(load_values(f))
        except helm.HelmValuesError as e:
            ensure(m.group(1) in str(e), f"{f.name}: the error does not name `{m.group(1)}`: {e}")
            continue
        except helm.HelmError as e:
            raise CheckError(f"{f.name}: failed, but not on the values schema: {type(e).__name__}: {e}") from None
        raise CheckError(f"{f.name}: rendered without an error")


@check("Grafana dashboard: valid JSON, only metrics the code registers (and which have no panel)")
def _dashboard() -> None:
    dash = json.loads((CHART / "dashboards" / "dagg.json").read_text())
    registered: dict[str, str] = {}
    for src in metric_sources():
        for kind, name in re.findall(r"register_(int_counter_vec|counter_vec|int_gauge|gauge|gauge_vec|int_gauge_vec|histogram_vec|histogram)!\(\s*\"(dagg_[a-z0-9_]+)\"", src.read_text()):
            registered[name] = kind
    ensure(len(registered) >= 10, f"metrics found in the code: {sorted(registered)}")
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash["panels"])
    ensure(exprs, "the dashboard has queries")
    used = set()
    for e in exprs:
        for m in re.findall(r"\bdagg_[a-z0-9_]+", e):
            base = m
            for suffix in ("_bucket", "_sum", "_count"):
                if m.endswith(suffix) and m[: -len(suffix)] in registered and registered[m[: -len(suffix)]].startswith("histogram"):
                    base = m[: -len(suffix)]
            ensure(base in registered, f"the dashboard queries `{m}`, which the code does not register")
            used.add(base)
    ids = [p["id"] for p in dash["panels"]]
    ensure(len(ids) == len(set(ids)), "panel ids are unique")
    # A metric added to the code without a panel is reported, not failed: the dashboard is
    # updated after the metric lands.
    missing = sorted(set(registered) - used)
    if missing:
        raise NoteCheck(f"metrics with no panel yet in dashboards/dagg.json: {missing}")


@check("k8s/: every manifest valid (strict), kustomization lists them all, the Secret from k8s/secret.sh")
def _k8s_valid() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    ensure(sorted(kust["resources"]) == files, f"kustomization resources {sorted(kust['resources'])} != files {files}")
    for f in files:
        for doc in yaml.safe_load_all((K8S / f).read_text()):
            if doc:
                ensure("namespace" not in doc["metadata"], f"{f}: names no namespace (applied with -n)")
                validate_object(doc, f"k8s/{f}")
    out = subprocess.run(["sh", str(K8S / "secret.sh")], capture_output=True, text=True, check=True, timeout=10).stdout
    secret = yaml.safe_load(out)
    validate_object(secret, "k8s/secret.sh")
    check_master_key_text(secret_value(secret, "master-key"), "k8s/secret.sh")
    ensure(len(secret_value(secret, "admin-password")) >= 16 and len(secret_value(secret, "cluster-token")) >= 32, "k8s/secret.sh secret lengths")
    second = yaml.safe_load(subprocess.run(["sh", str(K8S / "secret.sh")], capture_output=True, text=True, check=True, timeout=10).stdout)
    ensure(second["data"]["master-key"] != secret["data"]["master-key"], "k8s/secret.sh makes a fresh key each time")


@check("k8s/: 3-node StatefulSet, every pod gets all three peers (short stable names), node id N+1")
def _k8s_cluster() -> None:
    objs = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name != "kustomization.yaml":
            objs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    secret = yaml.safe_load(subprocess.run(["sh", str(K8S / "secret.sh")], capture_output=True, text=True, check=True, timeout=10).stdout)
    objs.append(secret)
    check_cluster(objs, "any-namespace", 3, short_names=True, extra_args=[])
    check_network_policy(objs, None, [], "k8s/networkpolicy.yaml")


@check("Dockerfile: hadolint clean; user, ports and data directory match the chart")
def _dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    ensure(hadolint, "hadolint is not installed (scripts/helm-check installs it)")
    r = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=30)
    ensure(r.returncode == 0, f"hadolint: {r.stdout}{r.stderr}")
    text = (ROOT / "Dockerfile").read_text()
    values = load_values(CHART / "values.yaml")
    user = re.findall(r"^USER (\d+):(\d+)", text, re.M)
    ensure(user and int(user[-1][0]) == values["podSecurityContext"]["runAsUser"], f"USER {user} is the chart's runAsUser")
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    ensure(exposed == {values["ports"]["api"], values["ports"]["peer"]}, f"EXPOSE {exposed} are the chart's ports")
    ensure(f"DAGG_DATA_DIR={values['dataDir']}" in text, "the image's DAGG_DATA_DIR is the chart's dataDir")
    ensure("cargo build --release --locked -p dagg-node" in text and "npm ci" in text and "npm run build" in text, "builds the UI, then the release binary")
    stages = re.findall(r"^FROM \S+(?: AS (\w+))?", text, re.M)
    ensure(stages.index("ui") < stages.index("build"), "the UI stage comes before the Rust stage")
    ensure(re.search(r'^ENTRYPOINT \["/usr/local/bin/dagg"\]', text, re.M) and re.search(r'^CMD \["serve"\]', text, re.M), "entry point `dagg serve`")
    ignored = (ROOT / ".dockerignore").read_text().split()
    ensure("target" in ignored and ".git" in ignored, ".dockerignore keeps target/ and .git out of the context")
    # What the build copies from the context exists (the UI's lock file: `npm ci` needs it).
    sources = [src for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M) for src in line.split()[:-1]]
    ensure("Cargo.lock" in {p.name for p in ROOT.iterdir()}, "Cargo.lock (cargo build --locked)")
    if not (ROOT / "ui" / "package.json").exists():
        raise NoteCheck("ui/ has not landed yet: the Dockerfile's UI stage needs ui/package.json and ui/package-lock.json")
    for src in sources:
        ensure(src == "." or (ROOT / src).exists(), f"the Dockerfile copies {src}, which does not exist")


# What debian:<release>-slim has of shared libraries a Rust binary may link (libc6, libgcc-s1).
SLIM_LIBS = {"linux-vdso.so.1", "libgcc_s.so.1", "libm.so.6", "libc.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


@check("the dagg binary links only the libraries the slim runtime image has (ldd)")
def _binary_libs() -> None:
    binary = find_binary()
    ldd = shutil.which("ldd")
    if binary is None or ldd is None:
        raise SkipCheck("no dagg binary built, or no ldd")
    out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, timeout=30).stdout
    libs = {Path(line.split()[0]).name for line in out.splitlines() if line.strip()}
    extra = sorted(libs - SLIM_LIBS)
    ensure(not extra, f"{binary} needs {extra}, which the Dockerfile's runtime stage does not install")


def find_binary() -> Path | None:
    for p in [os.environ.get("DAGG_BIN"), ROOT / "target" / "debug" / "dagg", ROOT / "target" / "release" / "dagg"]:
        if p and Path(p).is_file() and os.access(p, os.X_OK):
            return Path(p)
    return None


def chart_env_names() -> set[str]:
    """Every DAGG_* variable the chart hands a pod, over the CI values and join mode."""
    names: set[str] = {"DAGG_NODE_ID"}
    renders = [rendered_objects(None, "dagg")] + [rendered_objects(vf, "data-platform") for vf in ci_values()]
    renders.append(objects_of(render({"cluster": {"join": "http://dagg.other:8001"}, "peerTLS": {"source": "existingSecret", "existingSecret": "node-certs"}})))
    for objs in renders:
        c = container(one(objs, "StatefulSet"))
        names |= {e["name"] for e in c["env"]} | set(configmap_env(objs, c))
    return {n for n in names if n.startswith("DAGG_")}


@check("the chart's DAGG_* settings are what `dagg serve` reads (node/src/serve.rs and its --help)")
def _binary_flags() -> None:
    serve_src = (ROOT / "node" / "src" / "serve.rs").read_text()
    options = set(re.findall(r'env = "(DAGG_[A-Z0-9_]+)"', serve_src))
    if "DAGG_NODE_ID" not in options:
        # The chart is written for the clustered node (issue 5); a `dagg serve` from before it
        # has none of the cluster options, and the check waits for them.
        raise SkipCheck("`dagg serve` has no cluster options yet (no DAGG_NODE_ID in node/src/serve.rs)")
    if "DAGG_PEER_CERT" not in options:
        # The chart passes the peer port's certificates (issue 15); a `dagg serve` from before
        # that ignores them, and the check waits for the options.
        raise SkipCheck("`dagg serve` has no peer TLS options yet (no DAGG_PEER_CERT in node/src/serve.rs)")
    # Variables read by name (secrets, the log filter) anywhere in the code.
    literals: set[str] = set()
    for crate in ("node", "api", "cluster", "connectors", "actors"):
        for f in (ROOT / crate / "src").rglob("*.rs"):
            literals |= set(re.findall(r'"(DAGG_[A-Z0-9_]+)"', f.read_text()))
    passed = chart_env_names()
    for name in sorted(passed):
        ensure(name in options or name in literals, f"the chart sets {name}, which dagg does not read")
    missing = [n for n in SERVE_OPTION_ENV + TLS_OPTION_ENV if n not in options]
    ensure(not missing, f"`dagg serve` lacks options the chart passes: {missing}")
    binary = find_binary()
    if binary is None:
        raise NoteCheck("checked against the source; no dagg binary built for --help")
    r = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True, timeout=30)
    ensure(r.returncode == 0, f"{binary} serve --help: {r.stderr}")
    known = set(re.findall(r"\[env: (DAGG_[A-Z0-9_]+)", r.stdout))
    if "DAGG_NODE_ID" not in known:
        raise NoteCheck(f"checked against the source; {binary} predates the cluster options (rebuild it)")
    missing = [n for n in SERVE_OPTION_ENV + TLS_OPTION_ENV if n not in known]
    ensure(not missing, f"`{binary} serve --help` lacks {missing}")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


def http_text(url: str, token: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_json(url: str, token: str | None = None, body: dict[str, Any] | None = None, timeout: float = 5, ctx: ssl.SSLContext | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method="GET" if body is None else "POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def namespaces() -> str:
    """The unshare binary when user and mount namespaces work here (the loopback checks run
    every node in one: its /etc/hosts maps the pods' stable names to loopback addresses)."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        raise SkipCheck("no user and mount namespaces here (unshare): the pods' stable names cannot be given loopback addresses")
    return unshare


_loopback_failed: list[str] = []


def cluster_binary() -> Path:
    if _loopback_failed:
        raise SkipCheck(f"the first cluster on loopback did not form ({_loopback_failed[0]})")
    binary = find_binary()
    if binary is None:
        raise SkipCheck("no dagg binary built (target/debug/dagg or DAGG_BIN)")
    help_text = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    if "DAGG_NODE_ID" not in help_text:
        raise SkipCheck(f"{binary} has no cluster options yet")
    if "DAGG_PEER_CERT" not in help_text:
        raise SkipCheck(f"{binary} has no peer TLS options yet (--peer-cert): the chart's pods would run without TLS")
    namespaces()
    return binary


def dagg_cert_available(binary: Path) -> bool:
    return subprocess.run([str(binary), "cert", "--help"], capture_output=True, timeout=30).returncode == 0


def make_certs(binary: Path, ca_dir: str, replicas: int, **names: str) -> dict[str, Any]:
    """The Secret k8s/make-certs.sh prints (certificates made by `dagg cert`): NAME,
    HOST_SUFFIX, SECRET as the script takes them; the CA in ca_dir (made once, then reused)."""
    env = {"PATH": "/usr/bin:/bin", "DAGG": str(binary), "CA_DIR": ca_dir, "REPLICAS": str(replicas), "TMPDIR": os.path.dirname(ca_dir)} | names
    r = subprocess.run(["sh", str(K8S / "make-certs.sh")], env=env, capture_output=True, text=True, timeout=120)
    ensure(r.returncode == 0, f"k8s/make-certs.sh: {r.stderr.strip()}")
    return yaml.safe_load(r.stdout)


# Each pod's process runs in a user and mount namespace of its own (no root needed) where
# /etc/hosts maps the pods' stable names to loopback addresses, as the cluster's DNS maps them
# to pod addresses: the nodes dial, advertise and check certificates for the very names the
# chart gives them. With POD_NS_READ_ONLY, everything is also read-only except a fresh /tmp
# and the data directory (/mnt), as in a pod with readOnlyRootFilesystem; the folders in
# POD_NS_KEEP (the binary's, the pod's Secret files) stay visible at their paths, read-only,
# even under /tmp (a checkout there: the fresh /tmp must not hide the binary).
POD_NAMESPACE = r"""
set -e
mount --bind "$POD_NS_HOSTS" /etc/hosts
if [ -n "${POD_NS_READ_ONLY:-}" ]; then
  awk '{print $2}' /proc/self/mounts | sort -u | while read -r m; do
    case "$m" in /proc*|/sys*|/dev*) continue ;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
  done
  # The new /tmp is made on /mnt, the kept folders under /tmp bound into it, then moved.
  # (-n: /etc/mtab and /run/mount are read-only now.)
  mount -n -t tmpfs -o size=256m tmpfs /mnt
  old_ifs=$IFS; IFS=:
  for d in $POD_NS_KEEP; do
    case "$d" in
      /tmp/*) mkdir -p "/mnt/${d#/tmp/}"; mount -n --bind "$d" "/mnt/${d#/tmp/}"; mount -n -o remount,bind,ro "/mnt/${d#/tmp/}" ;;
    esac
  done
  IFS=$old_ifs
  mount -n --move /mnt /tmp
  mount -n -t tmpfs -o size=256m tmpfs /mnt
  if touch /etc/.dagg-ro-test 2>/dev/null; then echo "the root filesystem is still writable" >&2; exit 97; fi
  IFS=:
  for d in $POD_NS_KEEP; do
    if touch "$d/.dagg-ro-test" 2>/dev/null; then echo "$d is writable" >&2; exit 97; fi
  done
  IFS=$old_ifs
fi
exec "$@"
"""


class LoopbackPods:
    """Runs pods of a rendered StatefulSet as `dagg serve` processes on this machine: each with
    the pod's command (the sh wrapper) and environment (ConfigMap, env, downward API, Secrets)
    and its Secret volumes written as the kubelet would (in a folder standing for the mount
    path). The pods keep their stable names and ports: the names resolve to loopback addresses
    (127.a.b.N+1, one per pod) in each node's namespace; only the API listens on a free port of
    127.0.0.1 and the data directory is per process."""

    def __init__(self, binary: Path, tmp: str, max_pods: int) -> None:
        self.binary, self.tmp = binary, tmp
        self.unshare = namespaces()
        self.api = free_ports(max_pods)
        rnd = int.from_bytes(os.urandom(2), "big")
        self.net = f"127.{100 + rnd % 150}.{1 + (rnd >> 8) % 250}."
        self.hosts: dict[str, str] = {}
        self.hosts_file = Path(tmp, "hosts")
        self.hosts_file.write_text("")
        self.advertised: dict[int, str] = {}
        self.peer_tls: dict[int, tuple[bytes, bytes, bytes]] = {}
        self.ctx: ssl.SSLContext | None = None
        self.scheme = "http"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def ip(self, i: int) -> str:
        return f"{self.net}{i + 1}"

    def start(self, objs: list[dict[str, Any]], i: int, secrets: dict[str, dict[str, Any]], read_only: bool = False, data_dir: str | None = None) -> None:
        sts = one(objs, "StatefulSet")
        name = sts["metadata"]["name"]
        c = container(sts)
        env = effective_env(objs, c, f"{name}-{i}", "dagg")
        for e in c["env"]:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                ensure(ref["name"] in secrets or ref.get("optional"), f"pod {name}-{i} reads {e['name']} from the Secret {ref['name']}, which is not there")
                if ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["data"]:
                    env[e["name"]] = secret_value(secrets[ref["name"]], ref["key"])
        # The stable names, as the cluster's DNS would resolve them.
        for entry in filter(None, env.get("DAGG_PEERS", "").split(",")):
            node, addr = entry.split("=", 1)
            self.hosts[host_of(addr)] = self.ip(int(node) - 1)
        advertised = env["DAGG_ADVERTISE_ADDR"]
        ensure(self.hosts.setdefault(host_of(advertised), self.ip(i)) == self.ip(i), f"pod {name}-{i} advertises {advertised}, another pod's name")
        self.advertised[i] = advertised
        with open(self.hosts_file, "r+") as f:  # in place: running nodes see the new names too
            f.truncate(0)
            f.write("127.0.0.1 localhost\n::1 localhost\n" + "".join(f"{ip} {h}\n" for h, ip in sorted(self.hosts.items())))
        env["DAGG_API_ADDR"] = f"127.0.0.1:{self.api[i]}"
        env["DAGG_PEER_ADDR"] = f"{self.ip(i)}:{port_of(advertised)}"
        env["DAGG_DATA_DIR"] = data_dir or f"{self.tmp}/data-{i}"
        # Secret volumes, written as the kubelet writes them (fresh at every start).
        pod_dir = Path(self.tmp, f"pod-{i}")
        shutil.rmtree(pod_dir, ignore_errors=True)
        pod_dir.mkdir()
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}
        for m in c["volumeMounts"]:
            if not {"secret", "projected"} & set(volumes.get(m["name"], {})):
                continue
            d = pod_dir / m["name"]
            d.mkdir(parents=True)
            for path, data in volume_files(sts, secrets, m["name"]).items():
                (d / path).write_bytes(data)
                (d / path).chmod(0o400)
            root = m["mountPath"].rstrip("/") + "/"
            env = {k: v.replace(root, f"{d}/") if v.startswith(root) else v for k, v in env.items()}
        if "DAGG_PEER_CERT" in env:
            self.peer_tls[i] = tuple(Path(env[v]).read_bytes() for v in PEER_TLS_ENV)  # type: ignore[assignment]
        if "DAGG_TLS_CERT" in env:
            # The API over HTTPS: the client trusts the CA of the API's Secret.
            src = mounted_file(sts, effective_env(objs, c, f"{name}-{i}", "dagg")["DAGG_TLS_CERT"])
            self.ctx = ssl.create_default_context(cadata=secret_value(secrets[src[0]], "ca.crt"))
            self.scheme = "https"
        tmpdir = "/tmp" if read_only else self.tmp
        env |= {"PATH": f"{self.binary.parent}:/usr/bin:/bin", "HOME": tmpdir, "TMPDIR": tmpdir}
        env |= {"POD_NS_HOSTS": str(self.hosts_file), "POD_NS_KEEP": f"{self.binary.parent}:{pod_dir}", "POD_NS_READ_ONLY": "1" if read_only else ""}
        log = open(f"{self.tmp}/node-{i}.log", "ab")
        wrap = [self.unshare, "--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c", POD_NAMESPACE, "pod-namespace"]
        argv = ["sh"] + c["command"][1:] + c["args"]
        self.procs[i] = subprocess.Popen(wrap + argv, env=env, cwd="/", stdout=log, stderr=log)

    def url(self, i: int, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api[i]}{path}"

    def call(self, i: int, path: str, token: str | None = None, body: dict[str, Any] | None = None, timeout: float = 5) -> tuple[int, Any]:
        return http_json(self.url(i, path), token=token, body=body, timeout=timeout, ctx=self.ctx)

    def log(self, i: int) -> str:
        return Path(self.tmp, f"node-{i}.log").read_text(errors="replace")[-1500:]

    def wait_healthy(self, pods: list[int], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        ready: set[int] = set()
        while len(ready) < len(pods) and time.monotonic() < deadline:
            for i in pods:
                ensure(self.procs[i].poll() is None, f"node {i + 1} exited: {self.log(i)}")
                if i not in ready:
                    try:
                        if self.call(i, "/health", timeout=1)[0] == 200:
                            ready.add(i)
                    except OSError:
                        pass
            time.sleep(0.2)
        missing = [i for i in pods if i not in ready]
        ensure(not missing, f"not healthy within {seconds:.0f} s: " + " | ".join(f"node {i + 1}: {self.log(i)}" for i in missing))

    def stop(self, i: int) -> None:
        p = self.procs.pop(i)
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def login(self, i: int, secret: dict[str, Any]) -> str:
        status, body = self.call(i, "/auth/login", body={"username": "admin", "password": secret_value(secret, "admin-password")})
        ensure(status == 200, f"admin login with the Secret's password on node {i + 1}: {status} {body}")
        return body["access_token"]

    def agree(self, pods: list[int], token: str, seconds: float = 30) -> None:
        """Every pod answers GET /cluster with the token (one node's token works on all: they
        share the JWT secret): pod N is node N+1, one leader, and the voters are exactly these
        pods at their advertised (stable) addresses."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                views = []
                for i in pods:
                    status, view = self.call(i, "/cluster", token=token)
                    ensure(status == 200, f"GET /cluster on node {i + 1}: {status} {view}")
                    ensure(view["node_id"] == i + 1, f"pod {i} is node {view['node_id']}, want {i + 1}")
                    views.append(view)
                leaders = {v["leader_id"] for v in views}
                ensure(len(leaders) == 1 and None not in leaders, f"the nodes agree on one leader: {leaders}")
                for v in views:
                    voters = sorted(m["id"] for m in v["members"] if m["voter"])
                    ensure(voters == [i + 1 for i in pods], f"node {v['node_id']} sees voters {voters}, want {[i + 1 for i in pods]}")
                    for m in v["members"]:
                        ensure(m["peer_addr"] == self.advertised[m["id"] - 1], f"member {m['id']} at {m['peer_addr']}, want {self.advertised[m['id'] - 1]}")
                return
            except CheckError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def peer_port_demands_certificates(self, i: int, stranger: tuple[bytes, bytes] | None = None) -> None:
        """Pod i's peer port, seen from outside: with another pod's certificate (and checking
        pod i's for its stable name) a TLS client gets an answer; without a certificate, with
        one from another CA, or in plain HTTP it gets nothing."""
        cert, key, ca = self.peer_tls[(i + 1) % len(self.peer_tls)]
        host, port = host_of(self.advertised[i]), port_of(self.advertised[i])
        with tempfile.TemporaryDirectory() as d:
            Path(d, "c.crt").write_bytes(cert)
            Path(d, "c.key").write_bytes(key)

            def get(client: tuple[str, str] | None) -> str:
                ctx = ssl.create_default_context(cadata=self.peer_tls[i][2].decode())
                if client:
                    ctx.load_cert_chain(*client)
                try:
                    with socket.create_connection((self.ip(i), port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as t:
                        t.sendall(f"GET /raft/info HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
                        return t.recv(64).decode(errors="replace")
                except (ssl.SSLError, OSError) as e:
                    return f"refused: {e}"

            answer = get((str(Path(d, "c.crt")), str(Path(d, "c.key"))))
            ensure(answer.startswith("HTTP/1.1 200"), f"node {i + 1}'s peer port with a member's certificate, for {host}: {answer!r}")
            answer = get(None)
            ensure(not answer.startswith("HTTP/"), f"node {i + 1}'s peer port answered a client without a certificate: {answer!r}")
            if stranger:
                Path(d, "s.crt").write_bytes(stranger[0])
                Path(d, "s.key").write_bytes(stranger[1])
                answer = get((str(Path(d, "s.crt")), str(Path(d, "s.key"))))
                ensure(not answer.startswith("HTTP/"), f"node {i + 1}'s peer port answered a certificate of another CA: {answer!r}")
        try:
            with socket.create_connection((self.ip(i), port), timeout=5) as s:
                s.sendall(f"GET /raft/info HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
                plain = s.recv(64)
        except OSError as e:
            plain = str(e).encode()
        ensure(not plain.startswith(b"HTTP/1.1 200"), f"node {i + 1}'s peer port answers plain HTTP: {plain!r}")


def form_cluster(binary: Path, objs: list[dict[str, Any]], secrets: dict[str, dict[str, Any]], stranger: tuple[bytes, bytes] | None = None) -> None:
    """All pods start; they become healthy, agree on one leader and their stable addresses,
    log in with the Secret's admin password, and their peer ports speak only mutual TLS."""
    n = one(objs, "StatefulSet")["spec"]["replicas"]
    with tempfile.TemporaryDirectory() as tmp:
        pods = LoopbackPods(binary, tmp, n)
        try:
            for i in range(n):
                pods.start(objs, i, secrets)
            pods.wait_healthy(list(range(n)))
            pods.agree(list(range(n)), pods.login(0, credentials_secret_from(objs, secrets)))
            ensure(len(pods.peer_tls) == n, "every pod got its peer certificate")
            for i in range(n):
                pods.peer_port_demands_certificates(i, stranger)
        finally:
            pods.stop_all()


def credentials_secret_from(objs: list[dict[str, Any]], secrets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ref = env_of(container(one(objs, "StatefulSet")))["DAGG_MASTER_KEY"]["valueFrom"]["secretKeyRef"]
    return secrets[ref["name"]]


def k8s_objects() -> list[dict[str, Any]]:
    objs = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name != "kustomization.yaml":
            objs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return objs


def secret_sh() -> dict[str, Any]:
    return yaml.safe_load(subprocess.run(["sh", str(K8S / "secret.sh")], capture_output=True, text=True, check=True, timeout=10).stdout)


@check("the chart's pods form one 3-node cluster over mutual TLS with the chart's generated certificates: the real `dagg serve` with each pod's rendered command, environment and Secret volumes, its stable name on loopback")
def _cluster_on_loopback() -> None:
    binary = cluster_binary()
    objs = rendered_objects(None, "dagg")
    other = objects_of(render(None))
    stranger = pod_peer_tls(other, "dagg", all_secrets(other), 0)
    try:
        form_cluster(binary, objs, all_secrets(objs), stranger=(stranger[0], stranger[1]))
    except CheckError:
        _loopback_failed.append("see the failure above")
        raise


@check("peer certificates from cert-manager: the chart's pods form a cluster with what its Certificates ask for (made with `dagg cert` as the CA issuer would, in cert-manager's Secret layout)")
def _cert_manager_on_loopback() -> None:
    binary = cluster_binary()
    if not dagg_cert_available(binary):
        raise SkipCheck(f"{binary} has no `dagg cert`")
    objs = objects_of(render({"peerTLS": {"source": "certManager", "certManager": {"issuerRef": {"name": "cluster-ca", "kind": "Issuer"}}}}))
    secrets = all_secrets(objs)
    with tempfile.TemporaryDirectory() as tmp:
        ca = f"{tmp}/ca"
        subprocess.run([str(binary), "cert", "ca", "--out", ca], check=True, capture_output=True, timeout=60)
        for n, cert in enumerate(by_kind(objs, "Certificate")):
            out = f"{tmp}/{n}"
            hosts = [a for h in cert["spec"]["dnsNames"] for a in ("--host", h)]
            r = subprocess.run([str(binary), "cert", "node", "--node-id", str(n + 1), *hosts, "--ca-dir", ca, "--out", out], capture_output=True, text=True, timeout=60)
            ensure(r.returncode == 0, f"dagg cert node: {r.stderr}")
            data = {"tls.crt": Path(out, "node.crt"), "tls.key": Path(out, "node.key"), "ca.crt": Path(ca, "ca.crt")}
            secrets[cert["spec"]["secretName"]] = {"kind": "Secret", "metadata": {"name": cert["spec"]["secretName"]}, "type": "kubernetes.io/tls", "data": {k: base64.b64encode(p.read_bytes()).decode() for k, p in data.items()}}
    form_cluster(binary, objs, secrets)


@check("k8s/: the manifests' pods form one 3-node cluster the same way, with the certificates of k8s/make-certs.sh (`dagg cert`)")
def _k8s_cluster_on_loopback() -> None:
    binary = cluster_binary()
    if not dagg_cert_available(binary):
        raise SkipCheck(f"{binary} has no `dagg cert`")
    objs = k8s_objects()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(binary, f"{tmp}/ca", 3)
    validate_object(certs, "k8s/make-certs.sh")
    secrets = {"dagg-secrets": secret_sh(), "dagg-peer-tls": certs}
    check_peer_certs(objs, "any-namespace", secrets)
    form_cluster(binary, objs, secrets)


@check("a node runs with a read-only root filesystem (writable: /tmp and its data directory only), its binary in a folder under /tmp; the API over HTTPS with the chart's generated certificate; an API key scrapes /metrics")
def _read_only_root() -> None:
    binary = find_binary()
    if binary is None:
        raise SkipCheck("no dagg binary built (target/debug/dagg or DAGG_BIN)")
    help_text = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    https = "DAGG_TLS_CERT" in help_text
    objs = objects_of(render({"replicas": 1, "api": {"tls": {"enabled": https}}}))
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        # The binary in a folder under /tmp, as in a checkout there (issue 24): the fresh /tmp
        # of the namespace must not hide it.
        Path(tmp, "bin").mkdir()
        shutil.copy2(binary, Path(tmp, "bin", "dagg"))
        pods = LoopbackPods(Path(tmp, "bin", "dagg"), tmp, 1)
        try:
            pods.start(objs, 0, all_secrets(objs), read_only=True, data_dir="/mnt")
            pods.wait_healthy([0])
            ensure(pods.scheme == ("https" if https else "http"), f"the API is served over {pods.scheme}")
            token = pods.login(0, credentials_secret(objs))
            # A write through the API lands in the data directory: a personal API key, which is
            # also what the ServiceMonitor presents to /metrics.
            status, body = pods.call(0, "/me/api-keys", token=token, body={"name": "metrics"})
            ensure(status in (200, 201), f"POST /me/api-keys on a read-only root: {status} {body}")
            status, text = http_text(pods.url(0, "/metrics"), body["key"], ctx=pods.ctx)
            ensure(status == 200 and "dagg_api_requests_total" in text, f"GET /metrics with the API key as bearer token: {status} {text[:300]}")
            try:
                http_json(f"http://127.0.0.1:{pods.api[0]}/health", timeout=2)
                plain = "answered"
            except Exception as e:  # noqa: BLE001 - a TLS port answers plain HTTP with garbage or nothing
                plain = f"{type(e).__name__}: {e}"
            ensure(not https or plain != "answered", "the API port does not answer plain HTTP when TLS is on")
        finally:
            pods.stop_all()
    if not https:
        raise NoteCheck(f"the API over HTTPS not tried: {binary} has no --tls-cert")


@check("scaling replicas 3 -> 4 -> 3 as docs/deploy.md says (peer certificates in an existing Secret from k8s/make-certs.sh, the new pod's signed by the same CA): the new pod joins as a voter, restarted pods keep their membership, a removed pod stays a (down) voter")
def _scale_up_on_loopback() -> None:
    binary = cluster_binary()
    if not dagg_cert_available(binary):
        raise SkipCheck(f"{binary} has no `dagg cert`")
    peer = {"peerTLS": {"source": "existingSecret", "existingSecret": "dagg-node-certs"}}
    three = objects_of(render(peer))
    four = objects_of(render(peer | {"replicas": 4}))
    names = {"NAME": "dagg", "HOST_SUFFIX": "dagg-peers.dagg.svc.cluster.local", "SECRET": "dagg-node-certs"}
    with tempfile.TemporaryDirectory() as tmp:
        secrets = all_secrets(three) | {"dagg-node-certs": make_certs(binary, f"{tmp}/ca", 3, **names)}
        check_peer_certs(three, "dagg", secrets)
        secret = credentials_secret(three)  # the upgrade keeps the Secret (lookup)
        pods = LoopbackPods(binary, tmp, 4)
        try:
            for i in range(3):
                pods.start(three, i, secrets)
            pods.wait_healthy([0, 1, 2])
            token = pods.login(0, secret)
            pods.agree([0, 1, 2], token)
            # helm upgrade --set replicas=4, after k8s/make-certs.sh with REPLICAS=4 and the same
            # CA: the new pod starts with the 4-entry list ...
            secrets["dagg-node-certs"] = make_certs(binary, f"{tmp}/ca", 4, **names)
            check_peer_certs(four, "dagg", secrets)
            pods.start(four, 3, secrets)
            pods.wait_healthy([3])
            pods.agree([0, 1, 2, 3], token)
            # ... and the rolling update restarts the others with it, highest ordinal first.
            for i in (2, 1, 0):
                pods.stop(i)
                pods.start(four, i, secrets)
                pods.wait_healthy([i])
            pods.agree([0, 1, 2, 3], token)
            # Scaling back to 3 stops pod 3, but node 4 stays a voting member (reported down):
            # what the docs warn about.
            pods.stop(3)
            deadline = time.monotonic() + 20
            while True:
                status, view = pods.call(0, "/cluster", token=token)
                ensure(status == 200, f"GET /cluster: {status} {view}")
                four_m = [m for m in view["members"] if m["id"] == 4]
                if view["view"] == "leader" and four_m and not four_m[0]["up"]:
                    break
                ensure(time.monotonic() < deadline, f"node 4 is not reported down after its pod stopped: {view}")
                time.sleep(0.5)
            ensure(four_m[0]["voter"], "node 4 is still a voter after its pod is gone")
        finally:
            pods.stop_all()


class SkipCheck(Exception):
    pass


class NoteCheck(Exception):
    """The check passed, with something to say."""


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    passed = failed = skipped = 0
    for name, f in CHECKS:
        if only and only not in name:
            continue
        try:
            f()
        except NoteCheck as e:
            passed += 1
            print(f"ok   {name}\n     note: {e}")
        except SkipCheck as e:
            skipped += 1
            print(f"SKIP {name}: {e}")
        except CheckError as e:
            failed += 1
            print(f"FAIL {name}\n     {e}")
        except Exception:
            failed += 1
            print(f"FAIL {name}\n" + "".join("     " + line for line in traceback.format_exc().splitlines(True)))
        else:
            passed += 1
            print(f"ok   {name}")
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(f"helm-check: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
