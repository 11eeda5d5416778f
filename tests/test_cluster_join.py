"""The sweep on a real cluster started with `ray start` on this machine (tests/local_cluster.py).

No RAY_ADDRESS is set, as with `ray exec` or `ray submit` on a head: the driver
finds the cluster as Ray does.
"""
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .local_cluster import local_cluster
from .sweeps import REPO, table, write_sweep

pytestmark = pytest.mark.slow


@pytest.fixture
def start_cluster():
    """start_cluster(head_resources) -> (env, port, kill_worker): a head and one worker node, 1 CPU each."""
    with contextlib.ExitStack() as stack:
        def start(head_resources: str | None = None):
            cluster = stack.enter_context(local_cluster(head_resources))
            return cluster.env, cluster.port, cluster.kill_worker

        yield start


def ray_status(env: dict, port: int) -> str:
    from .local_cluster import RAY, auth_env

    return subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], env=auth_env(env),
                          capture_output=True, text=True, timeout=60).stdout


def alive_nodes(env: dict, port: int) -> int:
    """Nodes the GCS counts alive (`ray status` also lists a lost node among its recent failures)."""
    from .local_cluster import auth_env

    probe = ("import ray; ray.init(address='127.0.0.1:%d', logging_level='ERROR'); "
             "print('alive nodes:', sum(node['Alive'] for node in ray.nodes()))" % port)
    done = subprocess.run([sys.executable, "-c", probe], env=auth_env(env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    alive = re.search(r"alive nodes: (\d+)", done.stdout)  # Ray may print its own lines around it
    assert alive, done.stdout[-2000:]
    return int(alive.group(1))


def sweep_on(env: dict, path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_sweep_joins_a_ray_start_cluster_without_an_address(start_cluster, tmp_path, synthetic_root):
    env, port, _ = start_cluster()   # no TRAIN_DRIVER: any cluster not made from cluster.yaml
    path = write_sweep(tmp_path, synthetic_root, train={"epochs": 1, "batch_size": 8, "lr": 3e-3})
    done = sweep_on(env, path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f":{port}: 2 node(s), 2 CPUs" in done.stdout  # the cluster's two nodes, not a new local instance
    assert "resources must not be provided" not in done.stderr
    trials = table(tmp_path)
    assert len(trials) == 2 and set(trials["status"]) == {"finished"}
    nodes = table(tmp_path, which="trials")["worker_nodes"]
    assert all(len(n) == 1 and len(n[0]) == 56 for n in nodes)  # each trial's Ray node id is recorded
    assert alive_nodes(env, port) == 2  # the sweep disconnected; the cluster it joined is still up

    # DDP trial drivers hold TRAIN_DRIVER, which this cluster lacks: refused before any trial, with the fix
    ddp = write_sweep(tmp_path, synthetic_root, name="ddp", resources={"mode": "ddp", "workers_per_trial": 1})
    refused = sweep_on(env, ddp, timeout=300)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "TRAIN_DRIVER" in refused.stderr and "ray start --head --resources" in refused.stderr
    assert not (tmp_path / "results" / "ddp" / "experiment").exists()


def test_ddp_across_two_nodes_agrees_with_inprocess_and_queued_trials_free_their_placement_groups(
        start_cluster, tmp_path, synthetic_root):
    env, port, _ = start_cluster('{"TRAIN_DRIVER": 64}')   # shaped like cluster.yaml's head
    train = {"epochs": 3, "batch_size": 8, "lr": 3e-3}
    inprocess = write_sweep(tmp_path, synthetic_root, name="inproc", fold_indices=[0, 1, 2], train=train)
    assert sweep_on(env, inprocess).returncode == 0
    # 3 trials x 2 workers x 1 CPU on 2 CPUs: one trial at a time, the others queue for the whole cluster
    ddp = write_sweep(tmp_path, synthetic_root, name="ddp", fold_indices=[0, 1, 2], train=train,
                      resources={"mode": "ddp", "workers_per_trial": 2, "cpus_per_worker": 1})
    done = sweep_on(env, ddp, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = table(tmp_path, "ddp", "trials")
    assert len(trials) == 3 and set(trials["status"]) == {"finished"}
    assert all(len(set(nodes)) == 2 for nodes in trials["worker_nodes"])    # each trial's 2 ranks on 2 nodes

    # same fold, seed and global batch: DDP's gradient steps are the in-process ones up to float rounding (gloo,
    # fp32). The tolerance docs/performance.md states, on every fold: the loss per epoch within 1e-3, test UA
    # within 0.02 (bench/ddp_agreement.py measured 0 over 5 folds x 3 settings; an audit once saw 0.011)
    single, spread = (table(tmp_path, name, "epochs").sort_values(["fold", "epoch"]) for name in ("inproc", "ddp"))
    for column in ("train_loss", "val_loss"):
        assert spread[column].to_numpy() == pytest.approx(single[column].to_numpy(), abs=1e-3), column
    one, two = (table(tmp_path, name).sort_values("fold") for name in ("inproc", "ddp"))
    assert list(two["fold"]) == list(one["fold"]) == [0, 1, 2] and set(two["world_size"]) == {2}
    assert two["test_ua"].to_numpy() == pytest.approx(one["test_ua"].to_numpy(), abs=0.02)
    predictions = table(tmp_path, "ddp", "predictions").query("fold == 0")
    assert len(predictions) == predictions["utt_id"].nunique() == two.iloc[0]["n_test"]  # each test utterance once

    # the job's actors go when its driver has gone: within seconds, nothing stays reserved
    deadline = time.monotonic() + 60
    while "placement group" in (status := ray_status(env, port)) and time.monotonic() < deadline:
        time.sleep(2)
    assert "0.0/2.0 CPU" in status and "placement group" not in status, status


def test_the_cluster_extracts_features_on_every_node_and_they_are_the_drivers(start_cluster, tmp_path,
                                                                            synthetic_root, synthetic_corpus):
    """resources.extract: cluster: Ray Data actors on both nodes; the cache holds what the driver path writes."""
    import numpy as np

    from ser_models.data.cache import extract

    env, port, _ = start_cluster('{"TRAIN_DRIVER": 64}')
    path = write_sweep(tmp_path, synthetic_root, models={"fg_cme": ["full"]}, fold_indices=[0],
                       train={"epochs": 1, "batch_size": 8, "lr": 3e-3}, resources={"extract": "cluster"})
    done = sweep_on(env, path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[sweep] features extracted on 2 node(s) with Ray Data" in done.stdout      # both nodes did part
    assert set(table(tmp_path)["status"]) == {"finished"}
    cluster = extract(synthetic_corpus.table, ["fbank40", "word_spans"], tmp_path / "cache", progress=False)
    assert cluster.computed == []                                                        # all found in the cache
    driver = extract(synthetic_corpus.table, ["fbank40", "word_spans"], tmp_path / "driver-cache", progress=False)
    for name, store in driver.stores.items():
        assert sorted(store.utt_ids) == sorted(cluster.stores[name].utt_ids)
        assert all(np.array_equal(store[u], cluster.stores[name][u]) for u in store.utt_ids), name


def test_an_encoders_layers_are_extracted_on_both_nodes_as_the_driver_extracts_them(start_cluster, tmp_path,
                                                                                      synthetic_root,
                                                                                      synthetic_corpus):
    """The encoder travels to Ray Data's actors as a folder and a weights digest; each node loads it once."""
    import numpy as np

    pytest.importorskip("transformers")
    from orchestration.run.task import configured_features
    from ser_models.data.cache import extract

    from .test_ssl import save_tiny

    encoder = {"model": str(save_tiny(tmp_path / "wavlm", "wavlm"))}
    env, port, _ = start_cluster('{"TRAIN_DRIVER": 64}')
    path = write_sweep(tmp_path, synthetic_root, models={"ssl_probe": ["full"]}, encoder=encoder, fold_indices=[0],
                       train={"epochs": 2, "batch_size": 8, "lr": 3e-3}, resources={"extract": "cluster"})
    done = sweep_on(env, path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[sweep] features extracted on 2 node(s) with Ray Data" in done.stdout
    configured = configured_features({"pooling": "mean", "chunk_seconds": 30, "revision": "main", **encoder})
    cluster = extract(synthetic_corpus.table, ["ssl_layers"], tmp_path / "cache", progress=False,
                      configured=configured)
    assert cluster.computed == []
    driver = extract(synthetic_corpus.table, ["ssl_layers"], tmp_path / "driver-cache", progress=False,
                     configured=configured)
    store, theirs = driver.stores["ssl_layers"], cluster.stores["ssl_layers"]
    assert sorted(store.utt_ids) == sorted(theirs.utt_ids)
    assert max(np.abs(store[u] - theirs[u]).max() for u in store.utt_ids) < 1e-4


def test_a_worker_node_lost_mid_trial_continues_from_its_checkpoint(start_cluster, tmp_path, synthetic_root):
    import json

    env, port, kill_worker = start_cluster('{"TRAIN_DRIVER": 64}')
    # 60 short epochs: a few seconds during which both trials are mid-way
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1], train={"epochs": 60, "batch_size": 2,
                                                                             "lr": 1e-3, "retries": 2})
    driver = subprocess.Popen([sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path)], cwd=REPO,
                              env=env, stdout=open(tmp_path / "driver.log", "w"), stderr=subprocess.STDOUT)
    experiment = tmp_path / "results" / "t" / "experiment"

    def epochs_reported() -> list[int]:
        counts = []
        for result in experiment.glob("*/result.json"):
            lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            counts.append(-1 if any(line.get("final") for line in lines) else len(lines))
        return counts

    deadline = time.monotonic() + 400
    while not (len(epochs_reported()) == 2 and min(epochs_reported()) >= 5):  # both running (1 per node), mid-way
        assert time.monotonic() < deadline and driver.poll() is None, "never reached two half-trained trials"
        time.sleep(0.3)
    kill_worker()                                 # the worker node and the trial on it die at once
    driver.wait(timeout=900)
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-4000:]
    trials = table(tmp_path)
    assert len(trials) == 2 and set(trials["status"]) == {"finished"}              # 0 lost
    assert not trials.duplicated(["model", "ablation", "fold", "seed"]).any()      # 0 duplicated
    assert (trials["resumed_from"] >= 5).sum() == 1, trials[["fold", "resumed_from"]]  # continued, not restarted
    assert set(table(tmp_path, which="trials")["attempts"]) == {1, 2}
    # the driver says it in one line: which trial, from which epoch, why; no traceback, no Tune boxes
    log = (tmp_path / "driver.log").read_text()
    said = re.findall(r"\[sweep\] lstm_attn_text/full fold (\d) seed 0 resumes from epoch (\d+) \(retry 1 of 2\): "
                      r"its process or its node was lost \((\w+)\)", log)
    resumed = trials.query("resumed_from >= 5").iloc[0]
    assert said == [(str(resumed["fold"]), str(resumed["resumed_from"]), "ActorUnavailableError")] or \
        said == [(str(resumed["fold"]), str(resumed["resumed_from"]), "ActorDiedError")], log[-4000:]
    assert "Traceback" not in log and "Configuration for experiment" not in log and "errored after" not in log
    deadline = time.monotonic() + 60   # the GCS declares a node dead after its missed health checks
    while alive_nodes(env, port) != 1:                                          # the head carried on alone
        assert time.monotonic() < deadline, ray_status(env, port)
        time.sleep(2)


def test_a_sweep_waits_for_nodes_the_autoscaler_can_add_then_stops_resumable(start_cluster, tmp_path,
                                                                             synthetic_root):
    """A head with no CPUs (cluster.yaml's) whose autoscaler could add CPU workers: admitted, then waits."""
    import yaml

    env, port, kill_worker = start_cluster('{"TRAIN_DRIVER": 64}')
    kill_worker()                         # the worker node goes: the cluster is left with what a fresh `ray up` has
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump({"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 1}, "max_workers": 0},
        "cpu_worker": {"resources": {"CPU": 4}, "min_workers": 0, "max_workers": 2}}}))
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0],
                       resources={"mode": "inprocess", "cpus_per_worker": 2, "wait_timeout_s": 25})
    done = sweep_on({**env, "EMOSWEEP_AUTOSCALER_CONFIG": str(bootstrap)}, path)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]     # stopped, resumable
    assert "the autoscaler can add: cpu_worker up to 2 x {CPU: 4}" in done.stdout
    assert "waiting for 1 more CPU (the autoscaler adds nodes)" in done.stdout
    assert "run the same command to resume" in done.stdout and "wait_timeout_s" in done.stdout
    refused = write_sweep(tmp_path, synthetic_root, name="big", resources={"mode": "inprocess", "cpus_per_worker": 8})
    too_big = sweep_on({**env, "EMOSWEEP_AUTOSCALER_CONFIG": str(bootstrap)}, refused)
    assert too_big.returncode == 2 and "no node of this cluster" in too_big.stderr and "Fix:" in too_big.stderr


def test_check_reports_every_node_and_what_is_wrong(start_cluster, tmp_path, synthetic_root):
    env, port, _ = start_cluster('{"TRAIN_DRIVER": 64}')
    path = write_sweep(tmp_path, synthetic_root)
    check = [sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path), "--check"]
    ready = subprocess.run(check, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ready.returncode == 0, ready.stdout[-3000:] + ready.stderr[-3000:]
    node_lines = [line for line in ready.stdout.splitlines() if "writable / ok / read in place" in line]
    assert len(node_lines) == 2 and "TRAIN_DRIVER: 64" in "".join(node_lines)
    assert "[check] 2 node(s)" in ready.stdout and "ready" in ready.stdout
    assert not (tmp_path / "results" / "t").exists()          # a check starts no sweep

    (tmp_path / "a-file").write_text("")
    broken = subprocess.run(check + ["--storage", str(tmp_path / "a-file" / "sweeps")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert broken.returncode == 2
    problems = [line for line in broken.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2 and all("NOT writable" in p and "Fix: mount the same shared path" in p
                                      for p in problems), broken.stdout


def test_ray_job_submit_runs_a_sweep_on_the_cluster_and_again_resumes_it(tmp_path, synthetic_root):
    """The job-submission API (behind the dashboard, on the head's 127.0.0.1) runs the driver on the head."""
    from .local_cluster import RAY, auth_env

    path = write_sweep(tmp_path, synthetic_root)
    with local_cluster('{"TRAIN_DRIVER": 64}', dashboard_on=True) as cluster:
        submit = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard_port}", "--",
                  sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path)]
        deadline = time.monotonic() + 120
        while True:  # the head's job agent takes a few seconds after `ray start` to accept jobs
            first = subprocess.run(submit, env=auth_env(cluster.env), capture_output=True, text=True, timeout=600)
            if "No available agent" not in first.stderr or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert first.returncode == 0 and "succeeded" in first.stdout + first.stderr, first.stdout[-3000:]
        assert f":{cluster.port}: 2 node(s)" in first.stdout
        again = subprocess.run(submit, env=auth_env(cluster.env), capture_output=True, text=True, timeout=600)
        assert again.returncode == 0 and "resuming: 2 trials already finished" in again.stdout, again.stdout[-3000:]
    assert len(table(tmp_path)) == 2


def test_a_sweep_through_ray_client(tmp_path, synthetic_root):
    """ray://: the driver's callbacks travel to the cluster (they must pickle) and progress comes back."""
    from .local_cluster import auth_env

    path = write_sweep(tmp_path, synthetic_root)
    with local_cluster('{"TRAIN_DRIVER": 64}') as cluster:
        env = {k: v for k, v in auth_env(cluster.env).items() if k != "RAY_TMPDIR"}  # found only by its address
        done = subprocess.run([sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path), "--address",
                               f"ray://127.0.0.1:{cluster.client_port}"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        logs = Path(cluster.env["RAY_TMPDIR"]).glob("**/logs/ray_client_server*.[eo][ru][rt]")
        server_logs = "".join(f"\n{log.name}:\n{log.read_text()[-2000:]}" for log in logs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + server_logs
    assert "2 node(s)" in done.stdout and "[sweep] 2/2 trials done" in done.stdout
    assert len(table(tmp_path)) == 2
