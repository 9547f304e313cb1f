"""What can be checked about the deployment files without a Docker engine or a cluster:
the image's pinned base, user, health check, ports and build context; the Kubernetes
manifests' probes, security context, Secret references and disruption budget; the
Envoy example's gRPC settings."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from keyhold.adapters.crypto.aead import AeadKeyRing, KeyConfigurationError
from keyhold.settings import Settings
from keyhold.wiring.grpc_api import SERVICES

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
GRPC_PORT, HTTP_PORT, METRICS_PORT = 50051, 8080, 9464


# --- Dockerfile -------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def env(self) -> dict[str, str]:
        """The final stage's ENV, `KEY=value` pairs (with shell-style quoting)."""
        pairs = (item.split("=", 1) for args in self.final.all("ENV") for item in shlex.split(args))
        return {key: value for key, value in pairs}


def parse_dockerfile(text: str) -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def resolve(dockerfile: Dockerfile, value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: dockerfile.args[match.group(1)], value)


def test_every_stage_starts_from_a_base_pinned_by_tag_and_digest(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2, "multi-stage: build, then runtime"
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(part) for part in required.removeprefix(">=").split("."))
    for stage in dockerfile.stages:
        base = resolve(dockerfile, stage.base)
        match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+@sha256:[0-9a-f]{64}", base)
        assert match, f"{base} is not pinned to an exact version and a digest"
        assert tuple(int(part) for part in match.groups()[:2]) >= minimum


def test_the_runtime_stage_installs_only_wheels_built_in_the_build_stage(
    dockerfile: Dockerfile,
) -> None:
    build, runtime = dockerfile.stages[0], dockerfile.final
    assert any("pip wheel" in run for run in build.all("RUN"))
    assert runtime.all("COPY") == [], "the runtime stage takes nothing from the build context"
    (install,) = [run for run in runtime.all("RUN") if "pip" in run]
    assert f"from={build.name}" in install
    assert "--no-index" in install, "only the wheels from the build stage"
    assert "[dev]" not in install


def test_the_image_runs_as_an_unprivileged_numeric_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "numeric, so that Kubernetes' runAsNonRoot can verify it"
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_the_image_checks_its_own_health(dockerfile: Dockerfile) -> None:
    healthcheck = dockerfile.final.last("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert command[:2] == ["keyhold", "health"]
    assert command[command.index("--address") + 1].endswith(f":{GRPC_PORT}")


def test_the_image_exposes_grpc_http_and_metrics(dockerfile: Dockerfile) -> None:
    exposed = {
        int(port.split("/")[0]) for args in dockerfile.final.all("EXPOSE") for port in args.split()
    }
    assert exposed == {GRPC_PORT, HTTP_PORT, METRICS_PORT}


def test_the_image_defaults_are_valid_settings(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dockerfile.env()
    assert env["KEYHOLD_LISTEN_ADDRESS"] == f"0.0.0.0:{GRPC_PORT}"
    assert env["KEYHOLD_METRICS_ADDRESS"].endswith(f":{METRICS_PORT}")
    assert env["KEYHOLD_HTTP_ADDRESS"] == f"0.0.0.0:{HTTP_PORT}"
    for key, value in env.items():
        if key.startswith("KEYHOLD_"):
            monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.log_format == "json"
    assert settings.listen_address == env["KEYHOLD_LISTEN_ADDRESS"]


def test_the_entrypoint_serves(dockerfile: Dockerfile) -> None:
    assert json.loads(dockerfile.final.last("ENTRYPOINT")) == ["keyhold"]
    assert json.loads(dockerfile.final.last("CMD")) == ["serve"]


# --- .dockerignore ----------------------------------------------------------------


def _pattern(glob: str) -> re.Pattern[str]:
    """Docker's (Go filepath.Match) globs: `*` and `?` stop at `/`, `**` does not."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        elif glob[i] == "[":
            end = glob.index("]", i)
            out, i = out + glob[i : end + 1], end + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def ignored_by(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """A path is excluded if the last rule matching it or one of its parent
    directories excludes it (moby's patternmatcher, last match wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exclude, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = exclude
    return excluded


@pytest.fixture(scope="module")
def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        rules.append((exclude, _pattern(line.lstrip("!").strip("/"))))
    return rules


def test_the_ignore_rules_behave_like_dockers() -> None:
    rules = [(True, _pattern("*")), (False, _pattern("src")), (True, _pattern("**/__pycache__"))]
    assert ignored_by(rules, "tests/test_x.py")
    assert not ignored_by(rules, "src/keyhold/server.py")
    assert ignored_by(rules, "src/keyhold/__pycache__/server.cpython-311.pyc")


@pytest.mark.parametrize(
    "path",
    [".venv", ".venv/bin/python", ".git", ".git/HEAD", ".keyhold", ".keyhold/keyhold.db",
     ".keyhold/keys/encryption-keys", ".env", "src/keyhold/__pycache__/cli.cpython-311.pyc",
     "tests/conftest.py", "bench/rpc.py"],
)  # fmt: skip
def test_the_build_context_leaves_out(
    dockerignore: list[tuple[bool, re.Pattern[str]]], path: str
) -> None:
    assert ignored_by(dockerignore, path)


def test_everything_the_dockerfile_copies_exists_and_is_in_the_context(
    dockerfile: Dockerfile, dockerignore: list[tuple[bool, re.Pattern[str]]]
) -> None:
    copied = 0
    for stage in dockerfile.stages:
        for args in stage.all("COPY"):
            words = [word for word in args.split() if not word.startswith("--")]
            if "--from=" in args:
                continue
            for source in words[:-1]:
                path = ROOT / source
                assert path.exists(), f"COPY {source}: no such file"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                for file in files:
                    relative = file.relative_to(ROOT).as_posix()
                    if "__pycache__" not in relative:
                        assert not ignored_by(dockerignore, relative), f"{relative} is ignored"
                copied += 1
    assert copied >= 4  # pyproject.toml, README.md, src, generated


# --- Kubernetes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, f"two {document['kind']} objects"
            found[document["kind"]] = document
    return found


def _container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _pod_labels(manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_kustomization_applies_every_manifest_but_the_secret_example(
    manifests: dict[str, dict[str, Any]],
) -> None:
    listed = set(manifests["Kustomization"]["resources"])
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")}
    assert listed == on_disk - {"kustomization.yaml", "secret.example.yaml"}


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_are_native_grpc_health_checks(
    manifests: dict[str, dict[str, Any]], probe: str
) -> None:
    assert _container(manifests)[probe]["grpc"]["port"] == GRPC_PORT


def test_liveness_is_more_patient_than_readiness(manifests: dict[str, dict[str, Any]]) -> None:
    container = _container(manifests)

    def patience(probe: dict[str, Any]) -> int:
        return int(probe["periodSeconds"]) * int(probe["failureThreshold"])

    assert patience(container["livenessProbe"]) > patience(container["readinessProbe"])


def test_the_container_has_requests_and_limits(manifests: dict[str, dict[str, Any]]) -> None:
    resources = _container(manifests)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_pods_run_unprivileged_on_a_read_only_filesystem(
    manifests: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile.final.last("USER").split(":")[0]
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


def test_the_container_ports_are_the_images(
    manifests: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    ports = {port["containerPort"] for port in _container(manifests)["ports"]}
    exposed = {int(port) for args in dockerfile.final.all("EXPOSE") for port in args.split()}
    assert ports == exposed


@pytest.mark.parametrize(
    "variable", ["KEYHOLD_KEY_ENCRYPTION_KEYS", "KEYHOLD_DATABASE_URL", "KEYHOLD_REDIS_URL"]
)
def test_secrets_come_from_the_secret(manifests: dict[str, dict[str, Any]], variable: str) -> None:
    env = {item["name"]: item for item in _container(manifests)["env"]}
    reference = env[variable]["valueFrom"]["secretKeyRef"]
    secret = manifests["Secret"]
    assert reference["name"] == secret["metadata"]["name"]
    assert reference["key"] in secret["stringData"]


def test_the_environment_names_only_known_settings(manifests: dict[str, dict[str, Any]]) -> None:
    documented = set(re.findall(r"^#? ?(KEYHOLD_\w+)=", (ROOT / ".env.example").read_text(), re.M))
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        for item in container.get("env", []):
            assert item["name"] in documented, f"{item['name']} is not a Keyhold setting"


def test_the_secret_example_holds_placeholders_not_keys(
    manifests: dict[str, dict[str, Any]],
) -> None:
    values = manifests["Secret"]["stringData"]
    assert all("REPLACE_WITH_" in value for value in values.values())
    with pytest.raises(KeyConfigurationError):
        AeadKeyRing.parse(values["key-encryption-keys"])


def test_the_service_is_headless_and_selects_the_pods(
    manifests: dict[str, dict[str, Any]],
) -> None:
    service = manifests["Service"]["spec"]
    assert service["clusterIP"] == "None"
    assert service["selector"].items() <= _pod_labels(manifests).items()
    assert {port["port"] for port in service["ports"]} == {GRPC_PORT, HTTP_PORT, METRICS_PORT}


def test_the_disruption_budget_covers_the_pods_and_allows_a_drain(
    manifests: dict[str, dict[str, Any]],
) -> None:
    budget = manifests["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= _pod_labels(manifests).items()
    replicas = manifests["Deployment"]["spec"]["replicas"]
    if "maxUnavailable" in budget:
        assert 1 <= budget["maxUnavailable"] < replicas
    else:
        assert budget["minAvailable"] < replicas


# --- Envoy ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envoy() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    return config


def test_envoy_balances_calls_over_http2_across_the_headless_service(
    envoy: dict[str, Any], manifests: dict[str, dict[str, Any]]
) -> None:
    (cluster,) = envoy["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in http["explicit_http_config"]
    assert any("grpc_health_check" in check for check in cluster["health_checks"])
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address["port_value"] == GRPC_PORT
    assert address["address"].split(".")[0] == manifests["Service"]["metadata"]["name"]


def test_envoy_verifies_keyhold_tokens_with_the_published_keys(
    manifests: dict[str, dict[str, Any]],
) -> None:
    """deploy/envoy/jwt-authn.yaml: a downstream service's Envoy fetches the JWKS from
    Keyhold's HTTP port through the Service, and requires its own audience."""
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "jwt-authn.yaml").read_text())
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    filters = manager["typed_config"]["http_filters"]
    assert filters[-1]["name"] == "envoy.filters.http.router"
    authn = filters[0]["typed_config"]
    provider = authn["providers"]["keyhold"]
    assert provider["audiences"] == ["reports.internal"]
    assert [rule["requires"]["provider_name"] for rule in authn["rules"]] == ["keyhold"]
    uri = provider["remote_jwks"]["http_uri"]
    parts = urlsplit(uri["uri"])
    assert parts.path == "/.well-known/jwks.json"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    (group,) = clusters[uri["cluster"]]["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    service = manifests["Service"]
    http_port = {p["name"]: p["port"] for p in service["spec"]["ports"]}["http"]
    assert (parts.hostname, parts.port) == (address["address"], address["port_value"])
    assert address["port_value"] == http_port == HTTP_PORT
    assert address["address"].split(".")[0] == service["metadata"]["name"]
    env = {item["name"]: item.get("value") for item in _container(manifests)["env"]}
    assert env["KEYHOLD_HTTP_ADDRESS"] == f"0.0.0.0:{HTTP_PORT}"


def _routes(envoy: dict[str, Any]) -> list[dict[str, Any]]:
    (listener,) = envoy["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


def test_envoy_does_not_time_out_live_audit_streams(envoy: dict[str, Any]) -> None:
    streaming = {
        f"/{service.full_name}/{method.name}"
        for service in SERVICES
        for method in service.methods
        if method.server_streaming
    }
    exempt = {r["match"]["path"] for r in _routes(envoy) if r["route"].get("timeout") == "0s"}
    assert streaming
    assert streaming <= exempt


def test_envoy_retries_only_calls_keyhold_never_saw(envoy: dict[str, Any]) -> None:
    for route in _routes(envoy):
        policy = route["route"].get("retry_policy")
        if policy is not None:
            assert set(policy["retry_on"].split(",")) <= {"connect-failure", "refused-stream"}
