"""The project assembles: pipelines register, configuration loads, kedro-viz serves the lineage, and
`kedro jupyter lab` / `notebook` serve the project's kernel."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import PROJECT
from kedro.framework.project import configure_project, pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from runs import jupyter_dirs

PIPELINES = ("data_generation", "head_ablation", "categorisation", "reporting", "hero_heads")


@pytest.fixture(scope="module")
def project() -> Path:
    bootstrap_project(PROJECT)
    configure_project("ioi_anti")
    return PROJECT


def test_five_pipelines_and_default(project: Path) -> None:
    assert set(PIPELINES) <= set(pipelines)
    default = pipelines["__default__"]
    for name in PIPELINES:
        assert set(pipelines[name].nodes) <= set(default.nodes)
        assert pipelines[name].nodes, name
    outputs = default.all_outputs()
    assert {"prompts", "baseline", "per_head", "report"} <= outputs


def test_every_dataset_is_in_the_catalog_and_results_are_versioned(project: Path) -> None:
    with KedroSession.create(project_path=project) as session:
        catalog = session.load_context().catalog
        for name in pipelines["__default__"].datasets():
            if name.startswith("params:") or name == "parameters":
                continue
            assert name in catalog, f"{name} is not in the catalog"
        for name in ("baseline", "per_head", "prompts", "run_metadata"):
            assert catalog.get(name)._version is not None, f"{name} should be versioned"


def test_paper_environment_switches_the_model_list(project: Path) -> None:
    with KedroSession.create(project_path=project, env="paper") as session:
        params = session.load_context().params
    assert len(params["models"]) == 9 and "smollm2-135m" not in params["models"]
    assert params["data_generation"].section("ioi")["n_prompts"] >= 200
    assert params["data_generation"].section("anti")["n_prompts"] >= 200
    assert params["data_generation"].section("ioi")["baba_templates"], "soft merge keeps the base templates"


def test_training_environment_lists_pythia_checkpoints(project: Path) -> None:
    from ioi_anti.models.spec import resolve_models

    with KedroSession.create(project_path=project, env="paper_training") as session:
        params = session.load_context().params
    specs = resolve_models(params["models"], params["model_registry"])
    assert len(specs) == 40 and {s.checkpoint.base_model for s in specs} == {"pythia-160m", "pythia-410m"}
    assert {s.checkpoint.training_step for s in specs} >= {0.0, 143000.0}
    assert params["data_generation"].section("ioi")["n_prompts"] >= 200


def _free_port() -> int:
    """A free port below 49152: kedro-viz refuses the ephemeral range the OS hands out for port 0."""
    for port in random.sample(range(20000, 49000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below 49152")


def _serve(project: Path, log: Path, command: list[str], path: str, env: dict[str, str] | None = None) -> dict | None:
    """Start ``kedro <command>`` on a free port (``{port}`` in the command) and return the JSON of ``path``
    on it, or None if the server exits first."""
    port = _free_port()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", **(env or {})}
    cmd = [sys.executable, "-m", "kedro", *(word.format(port=port) for word in command)]
    with log.open("w") as out:
        # its own session, so that the server's worker processes are stopped with it
        server = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).json()
                except requests.RequestException:
                    time.sleep(2)
            return None
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def _serve_viz(project: Path, log: Path) -> dict | None:
    return _serve(project, log, ["viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", "{port}"], "/api/main")


@pytest.mark.e2e
@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_kedro_jupyter_serves_the_project_kernel(project: Path, tmp_path: Path, app: str) -> None:
    """`kedro jupyter lab` and `kedro jupyter notebook` start (their packages are installed by `make install`)
    with the project's kernel as the default; the kernel loads the kedro extension (catalog, context)."""
    token = "ioi-anti-test"
    command = ["jupyter", app, "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port={port}",
               f"--IdentityProvider.token={token}", *(["--allow-root"] if os.geteuid() == 0 else [])]  # CI runs as root
    log = tmp_path / "jupyter.log"
    env = jupyter_dirs(tmp_path)
    specs = (_serve(project, log, command, f"/api/kernelspecs?token={token}", env)
             or _serve(project, log, command, f"/api/kernelspecs?token={token}", env))
    assert specs is not None, f"kedro jupyter {app} did not serve:\n{log.read_text()[-3000:]}"
    assert specs["default"] == "kedro_ioi_anti", specs["default"]
    argv = specs["kernelspecs"]["kedro_ioi_anti"]["spec"]["argv"]
    assert "kedro.ipython" in argv and Path(argv[0]).resolve() == Path(sys.executable).resolve(), argv


def test_kedro_viz_serves_the_lineage(project: Path, tmp_path: Path) -> None:
    log = tmp_path / "viz.log"
    data = _serve_viz(project, log) or _serve_viz(project, log)  # a second try, on a new port
    assert data is not None, f"kedro viz did not serve /api/main:\n{log.read_text()[-3000:]}"
    names = {node["name"] for node in data["nodes"]}
    for name in PIPELINES:
        assert {n.name for n in pipelines[name].nodes} <= names, name
    assert {p["id"] for p in data["pipelines"]} >= set(PIPELINES)
    layers = [layer for layer in data.get("layers", []) if layer]
    assert layers[:2] == ["intermediate", "primary"], f"layers must form a DAG, got {layers}"
