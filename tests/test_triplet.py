"""Triplet-ranking hashing against tests/fixtures/triplet (produced by running
the published zhongzhh8/Image-Retrieval code): network layout and golden
outputs, the published checkpoint, triplets, loss and gradient, miners, the
sampler, the readers, the transforms, the metrics, and triplet_main.py
(learning, resume, files both ways, bad input)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import triplet_main
from data import DataRequest, build_splits
from data.samplers import ClassBalancedBatchSampler, RandomBatchSampler
from data.transforms import folder_transform
from builders import triplet as TripletHashing
from methods import read_checkpoint
from models import HashModel, triplet_hashing_loss
from models.miners import mine, squared_distances, triplet_list, valid_triplets
from script_runner import run
from utils.retrieval.metrics import evaluate_codes, hamming_ranking_stats, ternary_as_bits
from weight_fill import fill_state_dict, sine_input

FIXTURES = Path(__file__).parent / "fixtures" / "triplet"
TINY = ["--dataset_name", "synthetic", "--synthetic-ids", "4", "--synthetic-train", "8",
        "--synthetic-test", "2", "--img-size", "32", "--binary_bits", "16", "--margin", "8",
        "--batchSize", "16", "--classes-per-batch", "4", "--no-progress"]


def npz(*parts):
    with np.load(FIXTURES.joinpath(*parts)) as z:
        return {k: z[k] for k in z.files}


def manifest(bits):
    return json.loads((FIXTURES / "checkpoints" / f"triplet_hashmodel_{bits}.json").read_text())


# ---------------------------------------------------------------- network

@pytest.mark.parametrize("bits", [16, 48, 64])
def test_hash_model_layout_matches_the_published_one(bits):
    expected = manifest(bits)["state_dict"]
    state = HashModel(bits).state_dict()
    assert list(state) == list(expected)
    for name, (shape, dtype) in expected.items():
        assert list(state[name].shape) == shape and str(state[name].dtype) == f"torch.{dtype}"


@pytest.mark.parametrize("fixture, bits", [("golden_triplet_hashmodel64_224x224.npz", 64),
                                           ("golden_triplet_hashmodel16_64x64.npz", 16)])
def test_golden_outputs(fixture, bits):
    golden = npz("checkpoints", fixture)
    net = HashModel(bits)
    net.load_state_dict(fill_state_dict(net, phase=int(golden["fill_phase"])))
    net.eval()
    x = sine_input(golden["input"].shape)
    assert torch.equal(x, torch.from_numpy(golden["input"]))
    with torch.no_grad():
        features = net.features(x)
        pre_tanh = net.hashcoder[0](features)
        output = net(x)
    for name, value in (("features", features), ("pre_tanh", pre_tanh), ("output", output)):
        ref = golden[f"{name}_float64"]
        assert np.abs(value.numpy() - ref).max() <= 1e-4 * np.abs(ref).max(), name
    assert np.array_equal(torch.sign(output).numpy().astype(np.int8), golden["codes"])


def test_the_published_checkpoint_loads_and_gives_its_codes(tmp_path):
    golden = npz("checkpoints", "checkpoint_triplet_resnet_64bits_002.npz")
    path = FIXTURES / "checkpoints" / "triplet_resnet_64bits_002.pth"
    method = TripletHashing(64)
    method.load_file(read_checkpoint(path), path)  # weights_only, as every file here
    method.eval()
    with torch.no_grad():
        small = method.net(torch.from_numpy(golden["input"]))
        large = method.net(sine_input((4, 3, 224, 224)))
    assert np.abs(small.numpy() - golden["embeddings_float64"]).max() <= 1e-5
    assert np.abs(large.numpy() - golden["embeddings_224_float64"]).max() <= 1e-5
    assert np.array_equal(method.codes(small).numpy(), golden["codes"])
    assert np.array_equal(method.codes(large).numpy(), golden["codes_224"])
    # and the published loader reads it too
    HashModel(64).load(path)


def test_divide_and_encode_head():
    net = HashModel(16, head="dae")
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16) and out.abs().max() < 1
    # bit i reads slice i of the 512 features (32 values) and nothing else
    head = net.hashcoder[0]
    features = torch.randn(3, 512)
    changed = features.clone()
    changed[:, 5 * 32:6 * 32] += torch.randn(3, 32)
    moved = (head(changed) != head(features)).any(0)
    assert moved.tolist() == [i == 5 for i in range(16)]
    assert torch.allclose(head(features)[:, 5], torch.tanh(
        features[:, 160:192] @ head.weight[5] + head.bias[5]), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by the code length 48"):
        HashModel(48, head="dae")


# ---------------------------------------------------------------- triplets and loss

@pytest.mark.parametrize("name", ["tiny", "singletons", "all_same", "all_distinct", "set_order",
                                  "official_10x8"])
def test_triplets_are_the_published_ones(name):
    z = npz("triplets", f"{name}.npz")
    ours = triplet_list(valid_triplets(torch.from_numpy(z["labels"]))).numpy()
    published = z["triplets"].reshape(-1, 3)
    assert len(ours) == len(published) == json.loads(str(z["meta_json"]))["count"]
    # the published list orders class groups by set iteration; the loss does not depend on it
    assert sorted(map(tuple, ours)) == sorted(map(tuple, published))


@pytest.mark.parametrize("name", ["loss_tiny_8bit_m2", "loss_singletons_12bit_m4",
                                  "loss_10x8_16bit_m8", "loss_10x8_64bit_m20",
                                  "loss_pm1_4bit_m4_hinge_zero", "loss_separated_m1_all_inactive"])
def test_loss_and_gradient(name):
    z = npz("loss", f"{name}.npz")
    labels, margin = torch.from_numpy(z["labels"]), float(z["margin"])
    e64 = torch.tensor(z["embeddings"], dtype=torch.float64, requires_grad=True)
    loss = triplet_hashing_loss(e64, labels, margin)
    loss.backward()
    assert abs(loss.item() - float(z["loss_float64"])) <= 1e-12 * max(1.0, float(z["loss_float64"]))
    assert np.abs(e64.grad.numpy() - z["grad_float64"]).max() <= 1e-12
    e32 = torch.tensor(z["embeddings"], requires_grad=True)
    loss32 = triplet_hashing_loss(e32, labels, margin)
    loss32.backward()
    assert abs(loss32.item() - float(z["loss_float64"])) <= 1e-5 * max(1.0, float(z["loss_float64"]))
    assert np.abs(e32.grad.numpy() - z["grad_float64"]).max() <= 1e-6


def test_no_triplet_is_a_zero_loss_not_a_crash():
    e = torch.randn(4, 8, requires_grad=True)
    for labels in (torch.tensor([4, 4, 4, 4]), torch.tensor([1, 2, 3, 4])):
        loss = triplet_hashing_loss(e, labels, 2.0)
        loss.backward()
        assert loss.item() == 0.0 and e.grad.abs().sum().item() == 0.0


def test_miners_follow_their_definitions():
    gen = torch.Generator().manual_seed(3)
    e = torch.randn(12, 6, generator=gen)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    d = squared_distances(e)
    semi, hard = mine("semihard", labels, d, 1.5), mine("hard", labels, d, 1.5)
    for a in range(12):
        for p in range(12):
            for n in range(12):
                valid = a < p and labels[a] == labels[p] and labels[n] != labels[a]
                assert bool(semi[a, p, n]) == (valid and d[a, p] < d[a, n] < d[a, p] + 1.5)
            if a < p and labels[a] == labels[p]:
                negatives = [n for n in range(12) if labels[n] != labels[a]]
                assert hard[a, p].nonzero().view(-1).tolist() == [min(negatives, key=lambda n: d[a, n])]
    assert int(mine("all", labels, d, 1.5).sum()) == 4 * 3 * 9


# ---------------------------------------------------------------- sampler

@pytest.mark.parametrize("base", [0, 1])
def test_class_balanced_sampler(base):
    labels = [c + base for c in range(14) for _ in range((c * 5) % 11 + 2)]
    counts = {c: labels.count(c) for c in set(labels)}
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=10, images_per_class=4, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // 40  # __len__ tells the truth
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(set(classes)) == 10 and len(set(batch)) == len(batch)
        assert all(classes.count(c) == min(4, counts[c]) for c in set(classes))
    again = ClassBalancedBatchSampler(labels, classes_per_batch=10, images_per_class=4, seed=7)
    assert list(again) == batches  # deterministic under the seed
    other = ClassBalancedBatchSampler(labels, classes_per_batch=10, images_per_class=4, seed=8)
    assert list(other) != batches
    assert list(sampler) != batches  # the next epoch draws anew


def test_balanced_sampler_on_the_fixture_labels():
    """The published sampler's own test labels (an empty id, short classes):
    10 distinct classes x min(4, n_c) images per batch."""
    z = npz("sampler", "sampler_cub_small.npz")
    labels = z["labels"].tolist()
    sampler = ClassBalancedBatchSampler(labels, 10, 4, seed=0)
    assert len(sampler) == len(labels) // 40 == 2
    for batch in sampler:
        classes = [labels[i] for i in batch]
        assert len(set(classes)) == 10
        assert all(classes.count(c) == min(4, labels.count(c)) for c in set(classes))


def test_random_sampler_and_sharding():
    sampler = RandomBatchSampler(100, 16, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6 and all(len(b) == 16 for b in batches)
    assert len(set(sum(batches, []))) == 96
    shards = [list(ClassBalancedBatchSampler(list(range(10)) * 8, 5, 2, seed=2, rank=r,
                                             world_size=2)) for r in (0, 1)]
    whole = list(ClassBalancedBatchSampler(list(range(10)) * 8, 5, 2, seed=2))
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


# ---------------------------------------------------------------- readers and transforms

def readers():
    return json.loads((FIXTURES / "layouts" / "readers.json").read_text())


def test_cub_reader_on_the_fixture_tree():
    s = build_splits("cub", DataRequest(root=str(FIXTURES / "layouts" / "cub_fake"), preset="triplet"))
    ref = readers()["cub"]
    assert [[n, str(l)] for n, l in s.train.items] == ref["train"]["path_label"]
    assert [[n, str(l)] for n, l in s.queries.items] == ref["test"]["path_label"]
    assert s.train.targets == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4] and s.num_classes == 4
    image, label = s.queries[0]
    assert image.shape == (3, 224, 224) and label == 1  # the grayscale JPEG comes out RGB
    assert s.database.items == s.train.items and s.database.transform is not s.train.transform


@pytest.mark.parametrize("lists", ["", "lists"])
def test_dogs_reader_on_the_fixture_tree(tmp_path, lists):
    root = tmp_path / "dogs"
    shutil.copytree(FIXTURES / "layouts" / "dogs_fake" / "Images", root / "Images")
    (root / lists).mkdir(parents=True, exist_ok=True)
    for name in ("train_list.mat", "test_list.mat"):
        shutil.copy(FIXTURES / "layouts" / "dogs_fake" / name, root / lists / name)
    s = build_splits("dogs", DataRequest(root=str(root), preset="triplet"))
    ref = readers()["dogs"]
    assert [n for n, _ in s.train.items] == ref["train"]["images"]
    assert s.train.targets == ref["train"]["labels"] and s.queries.targets == ref["test"]["labels"]
    assert s.queries[0][0].shape == (3, 224, 224)


def test_reader_errors_name_the_file_and_the_layout(tmp_path):
    root = tmp_path / "cub"
    shutil.copytree(FIXTURES / "layouts" / "cub_fake", root)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(Exception) as err:
        build_splits("cub", DataRequest(root=str(root), preset="triplet"))
    assert str(err.value) == (
        f"CUB-200-2011 not found: {root / 'train_test_split.txt'} is missing (expected images.txt, "
        f"image_class_labels.txt, train_test_split.txt and images/ in {root}; pass --data-root or "
        f"--datapath_CUB)")
    with pytest.raises(Exception, match="Stanford Dogs not found: .*train_list.mat is missing"):
        build_splits("dogs", DataRequest(root=str(tmp_path), preset="triplet"))


def test_transforms_equal_the_published_ones():
    z = npz("transforms", "transforms.npz")
    img = Image.open(FIXTURES / "transforms" / "fixed_image.png").convert("RGB")
    assert np.array_equal(np.asarray(img), z["image"])
    assert np.array_equal(folder_transform("triplet", 224, train=False)(img).numpy(), z["test_output"])
    torch.manual_seed(0)
    assert np.array_equal(folder_transform("triplet", 224, train=True)(img).numpy(), z["train_output"])


# ---------------------------------------------------------------- metrics

@pytest.mark.parametrize("name", ["map_tiny_8bit_ties", "map_small_16bit_c10", "map_64bit_c20",
                                  "map_norel_12bit", "map_zero_codes_10bit"])
def test_compute_map_fixtures(name):
    z = npz("metrics", f"{name}.npz")
    q, d = z["query_codes"], z["db_codes"]
    if (q == 0).any() or (d == 0).any():  # what torch.sign gives for an exact 0
        q, d = ternary_as_bits(q), ternary_as_bits(d)
    stats = hamming_ranking_stats(q, d, z["query_labels"], z["db_labels"])
    ref = z["ap_per_query"]
    finite = np.isfinite(ref)
    assert np.allclose(np.asarray(stats.ap)[finite], ref[finite], atol=1e-6)
    assert (np.asarray(stats.num_relevant) == 0).tolist() == (~finite).tolist()
    skipped = evaluate_codes(q, d, z["query_labels"], z["db_labels"], skip_no_relevant=True)
    expected = float(ref[finite].mean()) if not finite.all() else float(z["mAP"])
    assert abs(skipped["mAP"] - expected) < 1e-6


# ---------------------------------------------------------------- the script

def test_learns_on_the_built_in_data(tmp_path):
    common = ["--dataset_name", "synthetic", "--synthetic-ids", "6", "--synthetic-train", "16",
              "--synthetic-test", "4", "--img-size", "32", "--binary_bits", "16", "--margin", "8",
              "--no-progress", "--outf", tmp_path, "--log-dir", tmp_path / "log"]
    out = tmp_path / "t.json"
    assert run(triplet_main, *common, "--batchSize", 24, "--classes-per-batch", 6,
               "--num_epochs", 12, "--checkpoint_step", 100, "--json", out) == 0
    trained = json.loads(out.read_text())["mAP"]
    untrained = tmp_path / "u.pth"
    torch.manual_seed(0)
    HashModel(16).save(untrained)
    assert run(triplet_main, *common, "-e", "--load_path", untrained, "--json", tmp_path / "u.json") == 0
    before = json.loads((tmp_path / "u.json").read_text())["mAP"]
    assert trained > 0.8 and trained > before + 0.4, (trained, before)


def test_run_folder_snapshots_resume_and_files_both_ways(tmp_path, capsys):
    common = [*TINY, "--outf", tmp_path / "runs", "--log-dir", tmp_path / "log"]
    assert run(triplet_main, *common, "--num_epochs", 5, "--checkpoint_step", 2,
               "--json", tmp_path / "a.json") == 0
    folder = tmp_path / "runs" / "synthetic_SGD_16bits_8.0margin_"
    names = sorted(p.name for p in folder.iterdir())
    # the published rule: epoch > 1 and (epoch % 2 == 0 or epoch == num_epochs - 1), 0-based
    assert names == ["triplet_resnet_16bits_002.pth", "triplet_resnet_16bits_004.pth",
                     "triplet_resnet_16bits_best.pth", "triplet_resnet_16bits_last.pth"]
    snapshot = torch.load(folder / "triplet_resnet_16bits_004.pth", weights_only=True)
    assert list(snapshot) == list(HashModel(16).state_dict())  # a bare state_dict, as published
    HashModel(16).load(folder / "triplet_resnet_16bits_004.pth")  # the published loader
    # -e with the pictures: the plots and the grid of the best snapshot
    assert run(triplet_main, *TINY, "-e", "--load_path", folder / "triplet_resnet_16bits_best.pth",
               "--plot", tmp_path / "plots", "--show-results", tmp_path / "grid") == 0
    assert (tmp_path / "plots" / "radius.svg").is_file() and (tmp_path / "grid" / "retrieval.png").is_file()
    assert (tmp_path / "log" / "synthetic_SGD_16bits_8.0margin_.log").is_file()
    # a fresh run never replaces those files
    assert run(triplet_main, *common, "--num_epochs", 5) == 2
    assert "already holds snapshots" in capsys.readouterr().err
    # resume: 3 epochs + 2 more == 5 straight, bit for bit
    split = [*TINY, "--outf", tmp_path / "split", "--log-dir", tmp_path / "log", "--checkpoint_step", 2]
    assert run(triplet_main, *split, "--num_epochs", 3) == 0
    assert run(triplet_main, *split, "--num_epochs", 5, "--resume", "auto",
               "--json", tmp_path / "b.json") == 0
    a = torch.load(folder / "triplet_resnet_16bits_last.pth", weights_only=True)
    b = torch.load(tmp_path / "split" / folder.name / "triplet_resnet_16bits_last.pth",
                   weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ra, rb = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert ra["mAP"] == rb["mAP"] and ra["best_epoch"] == rb["best_epoch"]


@pytest.mark.parametrize("argv, message", [
    (["--binary_bits", 64], "holds 16-bit codes; pass --binary_bits 16"),
    (["--arch", "resnet34"], "holds a resnet18 HashModel, not resnet34; pass --arch resnet18"),
])
def test_snapshot_of_another_shape_names_the_fix(tmp_path, capsys, argv, message):
    path = tmp_path / "s.pth"
    HashModel(16).save(path)
    assert run(triplet_main, *TINY, "-e", "--load_path", path, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(triplet_main, "--dataset_name", "CUB", "--no-progress") == 2
    assert capsys.readouterr().err.startswith(
        "error: CUB-200-2011 not found: data/CUB_200_2011/images.txt is missing")
    assert run(triplet_main, *TINY, "--images-per-class", 3, "--outf", tmp_path) == 2
    assert capsys.readouterr().err == ("error: --batchSize 16 is not --classes-per-batch 4 x "
                                      "--images-per-class 3\n")
    assert run(triplet_main, *TINY, "--margin", "-1") == 2
    assert capsys.readouterr().err == "error: argument --margin: expected a positive number, got -1\n"
    assert run(triplet_main, *TINY, "-e") == 2
    assert "-e needs --load_path" in capsys.readouterr().err
    assert run(triplet_main, *TINY, "--head", "dae", "--binary_bits", 48, "--outf", tmp_path) == 2
    assert "divisible by the code length 48" in capsys.readouterr().err
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert run(triplet_main, *TINY, "-e", "--load_path", tmp_path / "bad.pth") == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err


def test_speed_benchmark_runs_at_a_tiny_size(tmp_path):
    from bench import triplet_speed

    out = tmp_path / "speed.json"
    args = triplet_speed.get_args_parser().parse_args(
        ["--img-size", "32", "--repeat", "2", "--steps", "1", "--classes", "4", "--per-class", "3",
         "--bits", "16", "--json", str(out)])
    figures = triplet_speed.main(args)
    assert json.loads(out.read_text()) == figures and figures["triplets"] == 4 * 3 * 9
