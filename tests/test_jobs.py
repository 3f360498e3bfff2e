"""`ray job submit` of the smoke study to a real local Ray head with token authentication on.

The head is started the way a cluster operator starts one (`ray start --head`, here bound to
loopback on free ports and its own temp dir), with RAY_AUTH_MODE=token and a token of its own;
the study goes through the Jobs API (JobSubmissionClient, as `ray job submit` does) with the repo as
working_dir, and its outputs land at a path the test names. The head is stopped at the end by
ending the processes of this head only: `ray stop` would end every Ray process on the machine,
including other clusters that share it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 540
# What the working_dir upload leaves out (anchored: "data" alone would also drop mixopt/data/).
# Ray also honours .gitignore, which lists the same.
EXCLUDES = ["/.git/", "/.venv/", "/data/", "/runs/", "__pycache__/", ".pytest_cache/", ".hypothesis/", "*.egg-info/"]


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def head_processes(temp_dir: str):
    """Every process of the head started with this temp dir, and their descendants (workers, the
    job's driver)."""
    import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
    # isort: split
    import psutil

    roots = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(process.info["cmdline"] or []):
                roots.append(process)
        except psutil.Error:
            pass
    family = {p.pid: p for p in roots}
    for process in roots:
        try:
            family.update({c.pid: c for c in process.children(recursive=True)})
        except psutil.Error:
            pass
    return list(family.values())


def stop_head(temp_dir: str) -> None:
    import psutil

    processes = head_processes(temp_dir)
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with token auth: yields (dashboard address, token, env)."""
    pytest.importorskip("ray")
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    token = generate_new_authentication_token()
    temp_dir = tempfile.mkdtemp(prefix="mxray-", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard, client, agent, metrics = free_ports(5)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield f"http://127.0.0.1:{dashboard}", token, env
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def job_client(address: str, token: str):
    """JobSubmissionClient with the token; the dashboard may take a few seconds to answer."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 60
    while True:
        try:
            return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


async def follow_logs(client, job_id: str) -> str:
    """The job's log, streamed until the job ends (the Jobs API's own wait: no polling)."""
    chunks = []
    async for lines in client.tail_job_logs(job_id):
        chunks.append(lines)
    return "".join(chunks)


@pytest.mark.slow    # about 1.5 min on 2 idle cores (start, upload, 10 proxies, stop), 3 min on busy ones
@pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")   # inside Ray's tail_job_logs
def test_ray_job_submit_smoke_study_with_token_auth(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    address, token, _ = ray_head
    client = job_client(address, token)

    # token authentication is on: the Jobs API turns away a request without the token
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{address}/api/jobs/", timeout=30)
    assert refused.value.code == 401

    out = tmp_path / "shared" / "studies" / "smoke"     # the path the user names (shared storage on a cluster)
    job_id = client.submit_job(
        entrypoint=f"python -m mixopt recommend --config configs/smoke.yaml --out {out} --json",
        runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES},
    )
    logs = asyncio.run(asyncio.wait_for(follow_logs(client, job_id), JOB_TIMEOUT_S))
    info = client.get_job_info(job_id)
    assert info.status == JobStatus.SUCCEEDED, f"{info.status}: {info.message}\n{logs[-4000:]}"

    recommendation = json.loads((out / "recommendation.json").read_text())
    printed, _ = json.JSONDecoder().raw_decode(logs[logs.rindex("\n{\n") + 1:])  # the driver's --json output
    assert printed["weights"] == recommendation["weights"]
    weights = np.array(recommendation["weights"])
    assert len(recommendation["domains"]) == 7 and weights.shape == (7,)
    assert abs(weights.sum() - 1) < 1e-9 and np.all(weights >= -1e-12)
    assert np.all(weights <= np.array(recommendation["space"]["upper"]) + 1e-9)
    assert np.isfinite(recommendation["predicted_loss"])
    assert recommendation["n_runs"] == 8
    runs = pl.read_parquet(out / "runs.parquet")
    finished = runs.filter(pl.col("status") == "ok")
    assert finished["run_id"].n_unique() == 8 + 2                # proxies + seed-noise repeats
    # the corpus was prepared inside the job's copy of the working dir, not in this checkout's data/
    assert recommendation["corpus"]["directory"] == "data/fixture-corpus"
