"""The benchmarks run (at a tiny size) and write their JSON; nothing is
asserted about time (machines here are shared and noisy)."""

import json

from bench import eval_speed, train_speed


def test_train_speed_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "train.json"
    args = train_speed.get_args_parser().parse_args(
        ["--settings", "dcdh_dfhnet", "opqn_s4", "triplet_resnet18", "dchn_mlp", "--tiny",
         "--steps", "1", "--repeat", "1", "--json", str(out)])
    rows = train_speed.main(args)
    written = json.loads(out.read_text())["settings"]
    assert [r["name"] for r in written] == ["dcdh_dfhnet", "opqn_s4", "triplet_resnet18", "dchn_mlp"]
    keys = {"name", "device", "batch", "bare_images_per_s", "step_images_per_s",
            "epoch_images_per_s", "step_over_bare", "epoch_over_bare"}
    assert all(keys <= set(r) and r["device"] == "cpu" and r["step_over_bare"] > 0 for r in written)
    assert written == json.loads(json.dumps(rows))


def test_eval_speed_runs_and_checks_the_published_algorithm(tmp_path):
    out = tmp_path / "eval.json"
    args = eval_speed.get_args_parser().parse_args(
        ["--sizes", "40x400", "--skip-e2e", "--repeat", "1", "--json", str(out)])
    eval_speed.main(args)
    size = json.loads(out.read_text())["sizes"][0]
    assert size["published"]["queries_timed"] == 40 and size["agreement"]["abs_diff"] <= 1e-6
    assert set(size["speedup_vs_published"]) == {"numba", "torch"}
