"""Reads back, with the `mlflow` client, the runs that scripts/mlflow-check.sh logged through `report_to = ["mlflow"]`,
and compares them with the run directories: parameters, each metric's history against trainer_state.json's
log_history (values and steps), status, tags, and the artifacts against the output directory, byte for byte."""
import json
import math
import os
import sys
import tempfile

from mlflow.tracking import MlflowClient

out = sys.argv[1]
client = MlflowClient()
exp = client.get_experiment_by_name("finetune-check")
assert exp is not None, "the experiment was not created"
runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
assert set(runs) == {"sentiment", "sft"}, f"runs: {sorted(runs)}"

for name in ["sentiment", "sft"]:
    run = runs[name]
    run_dir = os.path.join(out, name)
    assert run.info.status == "FINISHED", (name, run.info.status)
    assert run.data.tags.get("purpose") == "check", run.data.tags
    params = run.data.params
    assert params["output_dir"] == run_dir, params.get("output_dir")
    assert float(params["learning_rate"]) > 0 and params["report_to"] == '["mlflow"]', params
    # Every numeric value the trainer logged, at its step, is the metric history.
    state = json.load(open(os.path.join(run_dir, "trainer_state.json")))
    want = {}
    for entry in state["log_history"]:
        for k, v in entry.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                want.setdefault(k, []).append((entry["step"], float(v)))
    for k, hist in want.items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
        assert [s for s, _ in got] == sorted(s for s, _ in hist), (name, k, got, hist)
        for (_, a), (_, b) in zip(got, sorted(hist)):
            assert abs(a - b) <= 1e-12 * max(1.0, abs(b)), (name, k, a, b)
    assert "loss" in want and (name == "sft" or "eval_accuracy" in want), sorted(want)
    # The artifacts are the output directory without its checkpoints, byte for byte.
    local = sorted(
        os.path.relpath(os.path.join(d, f), run_dir)
        for d, dirs, files in os.walk(run_dir)
        for f in files
        if not os.path.relpath(d, run_dir).split(os.sep)[0].startswith(("checkpoint-", "runs"))
        and not f.endswith(".tmp")
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = client.download_artifacts(run.info.run_id, "", tmp)
        remote = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
        # report.html and run_config.json are written by the command after the run ends: not artifacts.
        local = [f for f in local if f not in ("report.html", "run_config.json")]
        assert remote == local, (name, remote, local)
        for f in ["model.safetensors", "config.json"] if name == "sentiment" else ["model.safetensors"]:
            if f in local:
                assert open(os.path.join(root, f), "rb").read() == open(os.path.join(run_dir, f), "rb").read(), f
    print(f"{name}: {len(params)} params, {len(want)} metrics ({sum(map(len, want.values()))} points), "
          f"{len(remote)} artifacts, status {run.info.status}")
