"""deploy/: the images, the Flex Template, the launch script and the Kubernetes manifests agree with the project."""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from clipforge.cli import COMMANDS
from schemas.metadata import COMPRESSIONS
from schemas.spec import ENCODINGS, TASKS

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
VERSION = PROJECT["version"]
WORKER_DOCKERFILE = DEPLOY / "docker" / "beam-worker.Dockerfile"
TRAINER_DOCKERFILE = DEPLOY / "docker" / "trainer.Dockerfile"
LAUNCHER_DOCKERFILE = DEPLOY / "dataflow" / "flex-launcher.Dockerfile"
LAUNCH = DEPLOY / "dataflow" / "launch.sh"
TF_CONFIG = DEPLOY / "k8s" / "tf_config.py"

sys.path.insert(0, str(DEPLOY / "dataflow"))
import flex_main  # noqa: E402  (deploy/dataflow is not a package: it is copied into the launcher image)


# ---------------------------------------------------------------- helpers

def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines, out, current = path.read_text().splitlines(), [], ""
    for line in lines:
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            current = ""
    return out


def arg_defaults(instructions) -> dict[str, str]:
    """Default of every ARG (the last one declared wins, as a redeclaration without a value keeps it)."""
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def from_images(path: Path) -> list[str]:
    """Every FROM image of a Dockerfile with its ARG defaults substituted."""
    instructions = dockerfile(path)
    args = arg_defaults(instructions)
    images = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image) for image in images]


def entrypoint(path: Path) -> list[str]:
    (value,) = [rest for keyword, rest in dockerfile(path) if keyword == "ENTRYPOINT"][-1:]
    return json.loads(value)


def copy_sources(path: Path) -> list[str]:
    sources = []
    for keyword, rest in dockerfile(path):
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    return sources


def manifests() -> dict[str, list[dict]]:
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))}


def resource(kind: str) -> dict:
    (found,) = [d for docs in manifests().values() for d in docs if d["kind"] == kind]
    return found


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@functools.lru_cache(maxsize=None)
def cli_flags(command: str) -> frozenset[str]:
    """The long flags that `clipforge COMMAND --help` lists (a renamed or missing module fails here, not skips)."""
    out = subprocess.run([sys.executable, "-m", "clipforge.cli", command, "--help"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return frozenset(re.findall(r"^\s{2}(?:-\w, )?(--[a-z][a-z0-9-]*)", out.stdout, re.M))


@pytest.fixture(scope="module", autouse=True)
def _read_help_in_parallel():
    # Each --help imports Beam or TensorFlow (seconds each); start them all at once, then cache.
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(cli_flags, ("ingest", "train", "predict")))


CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def valid_cron(expr: str) -> bool:
    """True for a 5-field cron expression of numbers, *, ranges, lists and steps."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    for field, (lo, hi) in zip(fields, CRON_RANGES):
        for item in field.split(","):
            base, slash, step = item.partition("/")
            if slash and not (step.isdigit() and int(step) > 0):
                return False
            if base == "*":
                continue
            ends = base.split("-")
            if len(ends) > 2 or not all(e.isdigit() and lo <= int(e) <= hi for e in ends):
                return False
            if len(ends) == 2 and int(ends[0]) > int(ends[1]):
                return False
    return True


# ---------------------------------------------------------------- images

def test_worker_image_is_the_beam_sdk_image_of_the_pinned_beam():
    (image,) = from_images(WORKER_DOCKERFILE)
    m = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:(.+)", image)
    assert m, image
    python, beam = m.groups()
    assert beam == importlib.metadata.version("apache-beam")
    pin = next(d for d in PROJECT["dependencies"] if d.startswith("apache-beam"))
    assert Version(beam) in SpecifierSet(pin.split("]")[-1]), (beam, pin)
    assert Version(python + ".0") in SpecifierSet(PROJECT["requires-python"])
    assert entrypoint(WORKER_DOCKERFILE) == ["/opt/apache/beam/boot"]
    ffmpeg = arg_defaults(dockerfile(WORKER_DOCKERFILE))["FFMPEG_VERSION"]
    assert re.fullmatch(r"\d+:\d+\.\d+(\.\d+)?-\S+", ffmpeg), f"not a Debian version string: {ffmpeg}"
    runs = " ".join(rest for keyword, rest in dockerfile(WORKER_DOCKERFILE) if keyword == "RUN")
    assert 'install_ffmpeg.sh "$FFMPEG_VERSION"' in runs
    assert '"apache-beam[tfrecord]==${BEAM_VERSION}"' in runs


def test_trainer_image_is_the_tensorflow_gpu_image_of_the_pinned_tensorflow():
    (image,) = from_images(TRAINER_DOCKERFILE)
    m = re.fullmatch(r"tensorflow/tensorflow:(.+)-gpu", image)
    assert m, image
    assert m.group(1) == importlib.metadata.version("tensorflow")
    pin = next(d for d in PROJECT["dependencies"] if d.startswith("tensorflow"))
    assert Version(m.group(1)) in SpecifierSet(pin[len("tensorflow"):])
    assert entrypoint(TRAINER_DOCKERFILE) == ["clipforge"]
    module, function = PROJECT["scripts"]["clipforge"].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    runs = " ".join(rest for keyword, rest in dockerfile(TRAINER_DOCKERFILE) if keyword == "RUN")
    assert '"tensorflow==${TF_VERSION}"' in runs


@pytest.mark.parametrize("path", [WORKER_DOCKERFILE, TRAINER_DOCKERFILE], ids=lambda p: p.name)
def test_images_install_the_whole_project(path):
    sources = copy_sources(path)
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    for needed in ["pyproject.toml", PROJECT["readme"], *packages, "deploy/docker/install_ffmpeg.sh"]:
        assert needed in sources, f"{path.name} does not COPY {needed}"
    for source in sources:
        assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"


def test_dockerignore_lets_through_everything_the_images_copy():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and l[0] != "#"]
    assert lines[0] == "*", "the build context is an allowlist"
    allowed = {l[1:] for l in lines if l.startswith("!")}
    assert ".venv" not in allowed and ".git" not in allowed
    for path in (WORKER_DOCKERFILE, TRAINER_DOCKERFILE, LAUNCHER_DOCKERFILE):
        for source in copy_sources(path):
            assert source.split("/")[0] in allowed, f"{path.name} copies {source}, which .dockerignore drops"


def test_make_images_builds_both_dockerfiles_under_the_names_the_deployments_use():
    dry = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    built = {f: set(tags.split(" -t ")) for f, tags in re.findall(r"docker build -f (\S+) -t (.+) \.", dry)}
    assert built == {"deploy/docker/beam-worker.Dockerfile": {f"clipforge-beam-worker:{VERSION}", "clipforge-beam-worker"},
                     "deploy/docker/trainer.Dockerfile": {f"clipforge-trainer:{VERSION}", "clipforge-trainer"}}
    assert from_images(LAUNCHER_DOCKERFILE)[-1] == "clipforge-beam-worker"
    images = {c["image"] for docs in manifests().values() for d in docs for c in containers(d)}
    assert images == {f"clipforge-trainer:{VERSION}"}


def test_install_ffmpeg_refuses_a_version_that_is_not_on_offer():
    script = DEPLOY / "docker" / "install_ffmpeg.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    if shutil.which("apt-cache") is None:
        pytest.skip("no apt-cache on this machine to check install_ffmpeg.sh against")
    out = subprocess.run(["sh", str(script), "9:0.0-not-a-version"], capture_output=True, text=True,
                         env={**os.environ, "CHECK_ONLY": "1"}, timeout=60)
    assert out.returncode == 1
    assert "ffmpeg 9:0.0-not-a-version is not in the apt sources" in out.stderr


# ---------------------------------------------------------------- Dataflow

@pytest.mark.parametrize("pipeline", ["ingest", "predict"])
def test_flex_template_parameters_are_real_flags(pipeline):
    spec = json.loads((DEPLOY / "dataflow" / f"{pipeline}.metadata.json").read_text())
    assert spec["name"] and spec["description"]
    names = [p["name"] for p in spec["parameters"]]
    assert len(set(names)) == len(names)
    for p in spec["parameters"]:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"]) and p["label"] and p["helpText"], p
        assert isinstance(p.get("isOptional", False), bool)
        for regex in p.get("regexes", []):
            re.compile(regex)
    flags = cli_flags(pipeline)
    unknown = [n for n in names if flex_main.flag_for(n) not in flags]
    assert not unknown, f"not `clipforge {pipeline}` flags: {unknown}"
    required = {p["name"] for p in spec["parameters"] if not p.get("isOptional")}
    assert {"input", "output"} <= required


def test_ingest_template_choices_are_the_schema_choices():
    params = {p["name"]: p for p in json.loads((DEPLOY / "dataflow" / "ingest.metadata.json").read_text())["parameters"]}
    def choices(name):
        (regex,) = params[name]["regexes"]
        return tuple(re.fullmatch(r"\^\((.*)\)\$", regex).group(1).split("|"))
    assert choices("task") == TASKS
    assert choices("encoding") == ENCODINGS
    assert choices("compression") == COMPRESSIONS
    assert re.fullmatch(params["size"]["regexes"][0], "64x48") and not re.fullmatch(params["size"]["regexes"][0], "64")


def test_flex_main_turns_template_parameters_into_clipforge_flags():
    params = flex_main.load_parameters(str(DEPLOY / "dataflow" / "ingest.metadata.json"))
    argv = ["--input=gs://b/videos", "--labels_file=gs://b/labels.csv", "--num_shards=4", "--overwrite=true",
            "--splits=0.8,0.1,0.1", "--runner=DataflowRunner", "--sdk_container_image=img", "--task", "regression"]
    assert flex_main.to_cli_args(argv, params) == [
        "--input=gs://b/videos", "--labels=gs://b/labels.csv", "--num-shards=4", "--overwrite",
        "--splits=0.8,0.1,0.1", "--runner=DataflowRunner", "--sdk_container_image=img", "--task=regression"]
    assert flex_main.to_cli_args(["--overwrite=false"], params) == []


def test_flex_main_hands_the_parameters_to_clipforge_ingest():
    out = subprocess.run([sys.executable, str(DEPLOY / "dataflow" / "flex_main.py"), "--task=sideways",
                          "--input=/nonexistent", "--output=/nonexistent/out"], capture_output=True, text=True,
                         env={**os.environ, "CLIPFORGE_FLEX_PIPELINE": "ingest", "PYTHONPATH": str(ROOT)},
                         timeout=300, cwd=ROOT)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "sideways" in out.stderr and "Traceback" not in out.stderr


def test_launcher_image_runs_flex_main_for_either_pipeline():
    instructions = dockerfile(LAUNCHER_DOCKERFILE)
    assert entrypoint(LAUNCHER_DOCKERFILE) == ["/opt/google/dataflow/python_template_launcher"]
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex_main.py" in " ".join(r for k, r in instructions if k == "ENV")
    for pipeline in ("ingest", "predict"):
        for source in copy_sources(LAUNCHER_DOCKERFILE):
            assert (ROOT / source.replace("${PIPELINE}", pipeline)).is_file(), source


def launch(*args, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PROJECT", "REGION", "BUCKET", "WORKER_IMAGE")}
    return subprocess.run(["bash", str(LAUNCH), *args], capture_output=True, text=True, timeout=60,
                          env={**base, "DRY_RUN": "1", **env})


CLOUD = {"PROJECT": "proj", "REGION": "europe-west4", "BUCKET": "bkt", "WORKER_IMAGE": "reg/worker:1",
         "JOB_NAME": "job-1"}


def test_launch_script_checks_its_setup_before_doing_anything():
    assert subprocess.run(["bash", "-n", str(LAUNCH)]).returncode == 0
    helped = launch("--help")
    assert helped.returncode == 0 and all(w in helped.stdout for w in ("build", "run", "submit", "PROJECT"))
    no_project = launch("run", "ingest", "input=gs://b/v", **{**CLOUD, "PROJECT": ""})
    assert no_project.returncode == 2 and "PROJECT is not set" in no_project.stderr
    unknown = launch("run", "ingest", "input=gs://b/v", "output=gs://b/o", "task=regression", "colour=rgb", **CLOUD)
    assert unknown.returncode == 2 and "'colour' is not a parameter" in unknown.stderr
    missing = launch("run", "ingest", "input=gs://b/v", "task=regression", **CLOUD)
    assert missing.returncode == 2 and "needs output=VALUE" in missing.stderr


def test_launch_run_passes_parameters_and_worker_image_to_the_template():
    out = launch("run", "ingest", "input=gs://b/v", "output=gs://b/o", "task=regression", "splits=0.8,0.1,0.1", **CLOUD)
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:5] == ["gcloud", "dataflow", "flex-template", "run", "job-1"]
    options = dict(zip(argv[5::2], argv[6::2]))
    assert options["--template-file-gcs-location"] == "gs://bkt/templates/ingest.json"
    assert options["--region"] == "europe-west4" and options["--project"] == "proj"
    assert options["--parameters"] == ("^~^sdk_container_image=reg/worker:1~input=gs://b/v~output=gs://b/o"
                                       "~task=regression~splits=0.8,0.1,0.1")


def test_launch_submit_gives_beam_the_dataflow_options():
    out = launch("submit", "ingest", "--input", "gs://b/my videos", "--output", "gs://b/o", **CLOUD)
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:6] == ["clipforge", "ingest", "--input", "gs://b/my videos", "--output", "gs://b/o"]
    from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions, PipelineOptions,
                                                      StandardOptions, WorkerOptions)
    options = PipelineOptions(argv[6:])
    cloud = options.view_as(GoogleCloudOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (cloud.project, cloud.region, cloud.temp_location, cloud.job_name) == (
        "proj", "europe-west4", "gs://bkt/tmp", "job-1")
    assert options.view_as(WorkerOptions).sdk_container_image == "reg/worker:1"
    assert "use_runner_v2" in options.view_as(DebugOptions).experiments


# ---------------------------------------------------------------- Kubernetes

def containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec", {}).get("containers", []) if doc["kind"] in ("CronJob", "Job") else []


def command_line(container: dict) -> list[str]:
    """The clipforge argv a container runs: ENTRYPOINT clipforge + args, or the `exec clipforge` of its script."""
    if "command" not in container:
        return ["clipforge", *container["args"]]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0]
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    (line,) = [l for l in script.splitlines() if l.strip().startswith("exec clipforge ")]
    return shlex.split(line)[1:]


@pytest.mark.parametrize("expr, ok", [("0 3 * * *", True), ("*/15 0-6,22 1 1-12/2 0", True),
                                      ("0 3 * *", False), ("60 3 * * *", False), ("0 3 * * 8", False),
                                      ("5-1 * * * *", False), ("*/0 * * * *", False)])
def test_cron_check(expr, ok):
    assert valid_cron(expr) is ok


def test_every_manifest_loads_and_runs_real_subcommands_on_a_gpu():
    workloads = 0
    for name, docs in manifests().items():
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name
            for container in containers(doc):
                workloads += 1
                argv = command_line(container)
                assert argv[0] == "clipforge" and argv[1] in COMMANDS, argv
                resources = container["resources"]
                assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] >= 1
    assert workloads == 2


def test_retrain_cronjob():
    cron, config_map, pvc = resource("CronJob"), resource("ConfigMap"), resource("PersistentVolumeClaim")
    assert valid_cron(cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int) and job["backoffLimit"] >= 0
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    argv = command_line(container)
    assert argv[:3] == ["clipforge", "retrain", "--config"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, config_file = os.path.split(argv[3])
    (config_volume,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
    assert mounts[config_volume] == config_dir
    retrain = yaml.safe_load(config_map["data"][config_file])
    assert {"root", "ingest", "train", "promote"} <= set(retrain)
    (root_volume,) = [n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]]
    assert mounts[root_volume] == retrain["root"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for section, command in (("ingest", "ingest"), ("train", "train")):
        flags = cli_flags(command)
        unknown = [k for k in retrain[section] if "--" + k.replace("_", "-") not in flags]
        assert not unknown, f"retrain.yaml {section}: keys that are not `clipforge {command}` flags: {unknown}"


def test_retrain_yaml_is_a_valid_retrain_config():
    from clipforge import retrain as retrain_module
    from schemas.configs import from_mapping
    config_map = resource("ConfigMap")
    (text,) = config_map["data"].values()
    cfg = from_mapping(retrain_module.RetrainConfig, yaml.safe_load(text), "retrain.yaml")
    ingest, train, promote = cfg.configs()  # every section is its stage's checked config
    assert promote.metric == retrain_module.PRIMARY_METRIC[cfg.ingest["task"]]
    assert ingest.task == cfg.ingest["task"] and train.arch == cfg.train["arch"]


def test_multiworker_job_wiring_matches_tf_config():
    job, service = resource("Job"), resource("Service")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    workers = int(env["CLIPFORGE_WORKERS"])
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == workers >= 2
    assert env["CLIPFORGE_JOB_NAME"] == job["metadata"]["name"]
    assert env["CLIPFORGE_SERVICE"] == service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    port = int(env["CLIPFORGE_PORT"])
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert "python3 /opt/clipforge/tf_config.py" in container["args"][0]
    assert "deploy/k8s/tf_config.py /opt/clipforge/tf_config.py" in " ".join(
        r for k, r in dockerfile(TRAINER_DOCKERFILE) if k == "COPY")
    argv = command_line(container)
    assert argv[1] == "train" and argv[argv.index("--strategy") + 1] == "multiworker"
    assert {a for a in argv if a.startswith("--")} <= cli_flags("train")

    configs = []
    for index in range(workers):
        out = subprocess.run([sys.executable, str(TF_CONFIG)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env, "JOB_COMPLETION_INDEX": str(index), "POD_NAMESPACE": "ml"})
        assert out.returncode == 0, out.stderr
        configs.append(json.loads(out.stdout))
    hosts = [f"{job['metadata']['name']}-{i}.{pod['subdomain']}.ml.svc:{port}" for i in range(workers)]
    assert [c["cluster"] for c in configs] == [{"worker": hosts}] * workers
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(workers)]


def test_tf_config_refuses_an_index_outside_the_cluster():
    env = {**os.environ, "CLIPFORGE_WORKERS": "2", "CLIPFORGE_JOB_NAME": "j", "CLIPFORGE_SERVICE": "s"}
    env.pop("JOB_COMPLETION_INDEX", None)
    unset = subprocess.run([sys.executable, str(TF_CONFIG)], capture_output=True, text=True, env=env, timeout=60)
    assert unset.returncode == 2 and "JOB_COMPLETION_INDEX" in unset.stderr
    outside = subprocess.run([sys.executable, str(TF_CONFIG), "--index", "2"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert outside.returncode == 2 and "index=2 is outside [0, 2)" in outside.stderr


# The folders' import rules: pipelines/ and trainer/ meet only through schemas/; neither (nor
# schemas/) reaches up into clipforge/, the CLI and the stages that drive the others.
FORBIDDEN_IMPORTS = {"pipelines": ("trainer", "clipforge"), "trainer": ("pipelines", "clipforge"),
                     "schemas": ("pipelines", "trainer", "clipforge")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_packages_import_only_what_the_data_flow_allows(package):
    import ast
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offending += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN_IMPORTS[package]]
    assert offending == []


def test_one_version_for_the_package_the_exports_and_the_images():
    import clipforge
    import schemas
    assert PROJECT["version"] == clipforge.__version__ == schemas.__version__
