"""The Kubernetes manifests of infra/k8s, checked offline (no cluster runs here): well-formed YAML; the
built-in kinds, and the pod templates inside the KubeRay resources, against Kubernetes' own schemas
(kubernetes-validate, strict: an unknown field is an error); the KubeRay fields KubeRay requires;
one image everywhere, the MLflow address the Service gives, and a RayJob command that is a valid
musicrec config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from musicrec.config import load_config

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "infra" / "k8s"
VERSION = kubernetes_validate.latest_version()


def resources() -> list[dict]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return out


def of_kind(kind: str) -> list[dict]:
    return [r for r in resources() if r["kind"] == kind]


def pod_templates(resource: dict) -> list[dict]:
    """The pod templates a resource holds (KubeRay's are core PodTemplateSpecs)."""
    spec = resource["spec"]
    if resource["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    if resource["kind"] == "RayJob":
        return [spec["submitterPodTemplate"]]
    return [spec["template"]] if "template" in spec else []


def containers() -> list[dict]:
    return [c for r in resources() for t in pod_templates(r) for c in t["spec"]["containers"]]


def strictly_valid(resource: dict) -> None:
    try:
        kubernetes_validate.validate(resource, VERSION, strict=True)
        return
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
        problem = f"{resource['kind']} {resource['metadata'].get('name')}: {e.message} at {list(e.path)}"
    pytest.fail(problem, pytrace=False)  # one line, not the schema Kubernetes prints with it


def test_every_builtin_resource_validates_against_the_kubernetes_schema():
    builtin = [r for r in resources() if not r["apiVersion"].startswith("ray.io/")]
    assert {r["kind"] for r in builtin} >= {"Service", "Deployment", "StatefulSet"}
    for resource in builtin:
        strictly_valid(resource)


def test_the_pod_templates_of_the_kuberay_resources_validate():
    for resource in of_kind("RayCluster") + of_kind("RayJob"):
        for template in pod_templates(resource):
            strictly_valid(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
            )


def test_the_ray_cluster_has_a_cpu_head_and_a_gpu_worker_group_with_token_auth():
    (cluster,) = of_kind("RayCluster")
    head, groups = cluster["spec"]["headGroupSpec"], cluster["spec"]["workerGroupSpecs"]
    assert isinstance(head["rayStartParams"], dict)
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    gpu_groups = [
        g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu_groups
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for resource in of_kind("RayCluster") + of_kind("RayJob"):
        for template in pod_templates(resource):
            env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
            assert (
                env["RAY_AUTH_MODE"]["value"] == "token"
                and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
            )


def test_one_image_and_the_mlflow_service_address_everywhere():
    ours = {c["image"] for c in containers() if c["name"] != "postgres"}
    assert len(ours) == 1
    (image,) = ours
    # The Spark submit script runs the image's jobs from where the Dockerfile puts them.
    workdir = re.search(
        r"^WORKDIR (\S+)", (REPO / "infra" / "docker" / "Dockerfile").read_text(), re.M
    ).group(1)
    assert f"local://{workdir}/jobs/" in (REPO / "infra" / "spark" / "submit-k8s.sh").read_text()
    assert image.startswith("registry/musicrec:")

    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "mlflow"]
    uri = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    for container in containers():
        for var in container.get("env", []):
            if var["name"] == "MLFLOW_TRACKING_URI":
                assert var["value"] == uri, container["name"]
    (job,) = of_kind("RayJob")
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["MLFLOW_TRACKING_URI"] == uri
    (db,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "mlflow-db"]
    store = next(
        a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"] if "backend-store" in a
    )
    assert f"@{db['metadata']['name']}:{db['spec']['ports'][0]['port']}/" in store


def test_the_ray_job_runs_a_job_of_the_repository_with_a_valid_cluster_config():
    (job,) = of_kind("RayJob")
    (cluster,) = of_kind("RayCluster")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    python, script, *args = shlex.split(job["spec"]["entrypoint"])
    assert python == "python" and (REPO / script).is_file()
    files = [REPO / args[i + 1] for i, a in enumerate(args) if a == "--config"]
    overrides = [a for a in args if "=" in a]
    assert len(files) * 2 + len(overrides) == len(args)
    config = load_config(files, overrides)
    assert config.runtime.profile == "cluster" and config.train.use_gpu


def test_the_image_has_the_clients_of_the_mlflow_servers_stores():
    """The server runs in the project's image: it needs the driver of its backend store and, for
    S3-compatible artifacts, boto3 (MLflow's S3 artifact repository), among the package's own
    dependencies (the image installs those, not the dev extras, which bring boto3 only through moto)."""
    import tomllib

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower() for d in dependencies}
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    store = next(a for a in args if "backend-store" in a)
    if "postgresql" in store:
        assert "psycopg2-binary" in names
    if any(a.startswith("--artifacts-destination=s3://") for a in args):
        assert "boto3" in names
