"""opqn_main.py: the official command lines, several models per call,
checkpoints both ways through the official layout, stored features, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import opqn_main
from models import resnet20_pq
from builders import opqn as build_opqn
from script_runner import run
from utils.engine.checkpoint import CheckpointError


def opqn(feature_dim, num_books, num_words, size=4):
    """An OPQN method of the given shapes (code length from num_books, num_words)."""
    bits = num_books * (num_words.bit_length() - 1)
    return build_opqn(bits, num_books, num_words, feature_dim, size, num_classes=3)


def opqn_state(net, mlp):
    """What our method writes: the official layout."""
    m = opqn(net.feature_dim, mlp.shape[0], mlp.shape[2], net.size)
    m.net.load_state_dict(net.state_dict())
    with torch.no_grad():
        m.head.mlp.copy_(mlp)
    return m.official_state()


def load_opqn(net, ckpt, num_books, num_words, path="checkpoint"):
    m = opqn(net.feature_dim, num_books, num_words, net.size)
    m.load_official_state(ckpt, path)
    net.load_state_dict(m.net.state_dict())
    return m.head.mlp.detach()

FIXTURES = Path(__file__).parent / "fixtures"
TINY = ["--dataset", "synthetic", "--synthetic-ids", "4", "--synthetic-train", "6",
        "--synthetic-test", "2", "--no-progress"]


def cli(*argv):
    return run(opqn_main, *argv)


@pytest.mark.parametrize("name", ["pqret_D512_M4_K64", "pqret_D516_M6_K64",
                                  "pqret_D2048_M8_K256", "pqret_D512_M4_K64_ties"])
def test_features_file_gives_fixture_values(tmp_path, name):
    z = np.load(FIXTURES / "opqn" / f"{name}.npz")
    out = tmp_path / "m.json"
    assert cli("-e", "--features", FIXTURES / "opqn" / f"{name}.npz", "--topk", 1, 5, 10, 50, 100,
               "--json", out) == 0
    r = json.loads(out.read_text())
    assert abs(r["mAP"] - float(z["mAP"])) < 1e-6
    assert np.allclose(list(r["precision_at_k"].values()), z["topk_precision"], atol=1e-6)
    assert r["bits"] == int(z["num_books"]) * int(np.log2(int(z["num_words"])))
    # the same file with only the official [M, N] index table, no database features
    index_only = tmp_path / "index.npz"
    np.savez(index_only, **{k: z[k] for k in ("query_features", "query_labels", "db_labels",
                                              "mlp", "db_index")})
    assert cli("-e", "--features", index_only, "--json", out) == 0
    assert abs(json.loads(out.read_text())["mAP"] - float(z["mAP"])) < 1e-6


def test_official_layout_round_trip_both_ways(tmp_path):
    """A file in the official layout (as DataParallel saves it) loads here, and
    ours loads into a bare network the way the official script loads it."""
    golden = np.load(FIXTURES / "checkpoints" / "golden_opqn_resnet20pq_s4_D512.npz")
    official = resnet20_pq(20, 512, 512, size=4)
    mlp = torch.from_numpy(golden["mlp"])
    path = tmp_path / "official.tar"
    torch.save({"backbone": torch.nn.DataParallel(official).state_dict(),
                "mlp": torch.nn.Parameter(mlp)}, path)
    ours = resnet20_pq(20, 512, 512, size=4)
    loaded = load_opqn(ours, torch.load(path, weights_only=True), 4, 64, path)
    assert torch.equal(loaded, mlp)
    for k, v in official.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v)
    # our layout -> the official loader: DataParallel(net).load_state_dict(ckpt['backbone'])
    state = opqn_state(ours, loaded)
    assert all(k.startswith("module.") for k in state["backbone"])
    assert isinstance(state["mlp"], torch.nn.Parameter)
    wrapped = torch.nn.DataParallel(resnet20_pq(20, 512, 512, size=4))
    wrapped.load_state_dict(state["backbone"])
    # without the prefix is accepted too
    bare = {"backbone": official.state_dict(), "mlp": mlp}
    load_opqn(resnet20_pq(20, 512, 512, size=4), bare, 4, 64)


def test_checkpoint_shape_messages():
    net32 = resnet20_pq(20, 512, 512, size=4)
    ckpt = opqn_state(net32, torch.zeros(4, 128, 64))
    with pytest.raises(CheckpointError) as err:
        load_opqn(resnet20_pq(20, 516, 512, size=4), ckpt, 6, 64, "m.tar")
    assert str(err.value) == ("m.tar holds 4 books x 64 words on 512-d features (--len 24 --num 4 "
                              "--words 64); it does not fit 6 books x 64 words on 516-d features "
                              "(--len 36 --num 6 --words 64)")
    net112 = resnet20_pq(20, 512, 512, size=7)
    with pytest.raises(CheckpointError, match="holds a network for 32x32 images; it does not fit 112x112"):
        load_opqn(net112, ckpt, 4, 64, "m.tar")
    with pytest.raises(CheckpointError, match="is not an OPQN checkpoint"):
        load_opqn(net32, {"backbone": {}}, 4, 64, "m.tar")


@pytest.mark.parametrize("argv, message", [
    (["--len", 36, "--num", 4, "--words", 64, "--save", "x.tar"],
     "--len 36 does not match --num 4 --words 64: 4 x log2(64) = 24 bits"),
    (["--len", 16, 24, "--num", 2, 4, 6, "--words", 64, "--save", "a", "b"],
     "--num has 3 values for 2 models; give one per model (or one for all)"),
    (["--len", 16, 24, "--num", 2, 4, "--words", 256, 64, "--save", "a"],
     "--save names 1 file(s) for 2 model(s) (--len); give one name per model"),
    (["--len", 16, "--num", 2, "--words", 256], "--save NAME.tar is required"),
    (["--len", 32, "--num", 4, "--words", 256, "--save", "a"],
     "--words 256 exceeds the codeword length 128 (512-d features / 4 books)"),
    (["--len", 48, "--num", 6, "--words", 256, "--save", "a"],
     "512-d features do not split into 6 books; choose another --num"),
    (["-e", "--len", 16, "--num", 2, "--words", 256],
     "-e needs --load CHECKPOINT.tar (one per model) or --features FILE.npz"),
    (["--features", "x.npz"], "--features evaluates stored features: add -e"),
    (["-e", "--features", "missing.npz"], "no such file: missing.npz"),
])
def test_bad_input(tmp_path, capsys, argv, message):
    assert cli(*TINY, *argv, "--checkpoint-dir", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_train_two_models_then_evaluate(tmp_path, capsys):
    """Several models in one call, each written in the official layout, then the
    official evaluation command on both and on the stored features."""
    ck = tmp_path / "ck"
    out = tmp_path / "train.json"
    assert cli(*TINY, "--save", "a.tar", "b.tar", "--len", 12, 24, "--num", 2, 4, "--words", 64,
               "--epochs", 2, "--eval-every", 1, "--bs", 8, "--checkpoint-dir", ck,
               "--log-dir", tmp_path / "log", "--json", out) == 0
    trained = json.loads(out.read_text())
    assert [r["bits"] for r in trained] == [12, 24]
    for name, m in (("a.tar", 2), ("b.tar", 4)):
        ckpt = torch.load(ck / name, weights_only=True)
        assert list(ckpt)[:2] == ["backbone", "mlp"]
        assert all(k.startswith("module.") for k in ckpt["backbone"])
        assert tuple(ckpt["mlp"].shape) == (m, 512 // m, 64)
    assert len(list((tmp_path / "log").glob("*bits_synthetic_*.txt"))) == 2
    evaluated = tmp_path / "eval.json"
    codes = [tmp_path / "a.npz", tmp_path / "b.npz"]
    assert cli(*TINY, "-e", "--load", "a.tar", "b.tar", "--len", 12, 24, "--num", 2, 4,
               "--words", 64, "--checkpoint-dir", ck, "--json", evaluated, "--save-codes", *codes,
               "--report", tmp_path / "r.html", "--plot", tmp_path / "plots") == 0
    again = json.loads(evaluated.read_text())
    # both models on one figure; the report holds both models' numbers and the grid
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # two PQ plots (no radius) and the grid
    for r in again:
        assert f"{r['mAP']:.4f}</td>" in page
    # the built-in data's size comes from the checkpoint when not given
    plain = tmp_path / "plain.json"
    assert cli("--dataset", "synthetic", "--no-progress", "-e", "--load", "b.tar", "--len", 24,
               "--num", 4, "--words", 64, "--checkpoint-dir", ck, "--json", plain) == 0
    assert json.loads(plain.read_text())["mAP"] == pytest.approx(again[1]["mAP"], abs=1e-9)
    for a, b in zip(trained, again):
        assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-9)
    z = np.load(codes[1])
    assert z["db_index"].shape == (4, 24) and z["query_features"].shape == (8, 512)
    stored = tmp_path / "stored.json"
    assert cli("-e", "--features", codes[1], "--json", stored) == 0
    assert json.loads(stored.read_text())["mAP"] == pytest.approx(again[1]["mAP"], abs=1e-9)
    # the wrong configuration for a checkpoint names the one it holds
    capsys.readouterr()
    assert cli(*TINY, "-e", "--load", "a.tar", "--len", 24, "--num", 4, "--words", 64,
               "--checkpoint-dir", ck) == 2
    assert capsys.readouterr().err == (f"error: {ck / 'a.tar'} holds 12-bit codes; pass --len 12 "
                                      f"--num 2 --words 64\n")
    assert cli(*TINY, "-e", "--load", "a.tar", "--len", 12, "--num", 4, "--words", 8,
               "--checkpoint-dir", ck) == 2
    assert "holds 2 books x 64 words on 512-d features (--len 12 --num 2 --words 64)" in \
        capsys.readouterr().err


def test_learns_on_synthetic_data(tmp_path):
    """A smaller version of the README's synthetic run: trained mAP far above untrained."""
    common = ["--dataset", "synthetic", "--synthetic-ids", "6", "--synthetic-train", "16",
              "--synthetic-test", "4", "--no-progress", "--len", 24, "--num", 4, "--words", 64,
              "--checkpoint-dir", tmp_path]
    out = tmp_path / "m.json"
    assert cli(*common, "--save", "s.tar", "--epochs", 12, "--eval-every", 0, "--bs", 16,
               "--log-dir", tmp_path, "--json", out) == 0
    trained = json.loads(out.read_text())["mAP"]
    torch.manual_seed(0)
    untrained = tmp_path / "u.tar"
    torch.save(opqn_state(resnet20_pq(20, 512, 512, size=4), torch.randn(4, 128, 64)), untrained)
    assert cli(*common, "-e", "--load", untrained, "--json", tmp_path / "u.json") == 0
    baseline = json.loads((tmp_path / "u.json").read_text())["mAP"]
    assert trained > 0.6 and trained > baseline + 0.3, (trained, baseline)
