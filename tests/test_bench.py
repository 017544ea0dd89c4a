"""The benchmarks run (at a tiny size) and write their JSON; nothing is
asserted about time (machines here are shared and noisy)."""

import json

import pytest

from bench import eval_speed, loader_speed, train_speed


def test_train_speed_covers_the_registry_and_writes_its_json(tmp_path):
    """Every registered method's shapes are benchmarked (none listed by hand),
    and each row's ratios are the ratios of its own throughputs."""
    from methods import method_class, method_names

    registered = [name for m in method_names() for name, *_ in method_class(m).speed_settings()]
    assert set(registered) >= {"dcdh_dfhnet", "opqn_s4", "triplet_resnet18", "dchn_mlp"}
    assert train_speed.get_args_parser().parse_args([]).settings == registered
    out = tmp_path / "train.json"
    chosen = ["dcdh_dfhnet", "opqn_s4", "triplet_resnet18", "dchn_mlp"]
    args = train_speed.get_args_parser().parse_args(
        ["--settings", *chosen, "--tiny", "--steps", "1", "--repeat", "1", "--json", str(out)])
    rows = train_speed.main(args)
    written = json.loads(out.read_text())["settings"]
    assert [r["name"] for r in written] == chosen and written == json.loads(json.dumps(rows))
    for r in written:
        assert r["device"] == "cpu" and r["batch"] == 8
        assert r["step_over_bare"] == pytest.approx(r["bare_images_per_s"] / r["step_images_per_s"])
        assert r["epoch_over_bare"] == pytest.approx(
            r["bare_images_per_s"] / r["epoch_images_per_s"])


def test_eval_speed_runs_and_checks_the_published_algorithm(tmp_path):
    out = tmp_path / "eval.json"
    args = eval_speed.get_args_parser().parse_args(
        ["--sizes", "40x400", "--skip-e2e", "--repeat", "1", "--json", str(out)])
    eval_speed.main(args)
    size = json.loads(out.read_text())["sizes"][0]
    assert size["published"]["queries_timed"] == 40 and size["agreement"]["abs_diff"] <= 1e-6
    assert set(size["speedup_vs_published"]) == {"numba", "torch"}


def test_loader_speed_measures_every_preset_and_writes_its_json(tmp_path):
    out = tmp_path / "loader.json"
    args = loader_speed.get_args_parser().parse_args(["--tiny", "--repeat", "1", "--json", str(out)])
    rows = loader_speed.main(args)
    written = json.loads(out.read_text())["presets"]
    assert [r["preset"] for r in written] == list(loader_speed.PRESETS) == [r["preset"] for r in rows]
    for r in written:
        assert {"uncached_images_per_s", "cached_images_per_s", "bare_network_images_per_s"} <= set(r)
        assert r["cached_over_uncached"] == pytest.approx(
            r["cached_images_per_s"] / r["uncached_images_per_s"])
        assert r["cached_epoch_over_bare"] == pytest.approx(
            r["bare_network_images_per_s"] / r["cached_epoch_images_per_s"])
