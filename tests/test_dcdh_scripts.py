"""dcdh_train.py and evaluation.py --load: checkpoints in the official layout,
the golden checkpoint, mismatch messages, bad input, and learning."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import dcdh_train
import evaluation
from models import DFHNet, SphereNet_hashing
from builders import dcdh as DCDH
from script_runner import run
from utils.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from weight_fill import fill_state_dict, fill_tensor

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
TINY = ["--dataset", "synthetic", "--synthetic-ids", "4", "--synthetic-train", "6",
        "--synthetic-test", "2", "--no-progress"]


def train_cli(*argv):
    return run(dcdh_train, *argv)


def eval_cli(*argv):
    return run(evaluation, *argv)


def golden_checkpoint(path):
    """The fixture checkpoint dcdh_facescrub48_synthetic.tar, rebuilt from the
    documented weight fill: DFHNet(48) backbone and 530 centers (k = 121)."""
    net = DFHNet(48)
    backbone = fill_state_dict(net)
    centers = fill_tensor("centers", (530, 48), k=len(backbone))
    torch.save({"backbone": backbone, "centers": {"centers": centers}}, path)
    return path


def test_golden_checkpoint_gives_golden_codes(tmp_path):
    path = golden_checkpoint(tmp_path / "dcdh_facescrub48_synthetic.tar")
    golden = np.load(FIXTURES / "golden_dcdh_dfhnet48.npz")
    ckpt = load_checkpoint(path)
    assert list(ckpt) == ["backbone", "centers"] and list(ckpt["centers"]) == ["centers"]
    assert np.array_equal(ckpt["centers"]["centers"].numpy(), golden["centers"])
    method = DCDH("dfhnet", 48, 530)
    method.load_official_state(ckpt, path)
    net = method.net
    assert torch.equal(method.criterion.centers, ckpt["centers"]["centers"])
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(golden["input"]))
    assert np.array_equal(np.where(out.numpy() > 0, 1, -1), golden["codes"])
    assert np.abs(out.numpy() - golden["output"]).max() <= 1e-5


def test_dataparallel_prefix_is_accepted(tmp_path):
    net = DFHNet(12)
    state = {"module." + k: v for k, v in net.state_dict().items()}
    DCDH("dfhnet", 12, 3).load_backbone({"backbone": state})


@pytest.mark.parametrize("make, arch, bits, message", [
    (lambda: DFHNet(36).state_dict(), "dfhnet", 48, "holds 36-bit codes; pass --len 36"),
    (lambda: SphereNet_hashing(20, 48).state_dict(), "dfhnet", 48,
     "holds a sphere20 network, not dfhnet; pass --arch sphere20"),
    (lambda: {k: v for k, v in DFHNet(48).state_dict().items() if not k.startswith("conv4")},
     "dfhnet", 48, "does not fit dfhnet with --len 48: missing 7 keys (e.g. conv4.0.weight)"),
])
def test_mismatch_messages(tmp_path, make, arch, bits, message):
    with pytest.raises(CheckpointError) as err:
        DCDH(arch, bits, 3).load_backbone({"backbone": make()}, "m.tar")
    assert message in str(err.value)


def test_not_a_dcdh_checkpoint():
    with pytest.raises(CheckpointError, match=r"m.tar is not a DCDH checkpoint: no 'backbone' "
                                              r"state_dict \(top-level keys: net, mlp\)"):
        DCDH("dfhnet", 12, 3).load_backbone({"net": {}, "mlp": 1}, "m.tar")


def test_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.tar"
    save_checkpoint({"backbone": DFHNet(12).state_dict()}, good)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.tar is not a readable checkpoint"):
        load_checkpoint(cut)
    text = tmp_path / "notes.tar"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.tar is not a readable checkpoint"):
        load_checkpoint(text)


class _Payload:
    """Unpickling this would call os.system: weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.tar"
    torch.save({"backbone": {}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*evil.tar: it holds pickled objects"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same bytes with plain pickle would have run the command: the test is live
    with open(path, "rb") as f:
        assert b"system" in f.read()


def test_train_writes_official_layout_and_evaluates(tmp_path, capsys):
    ckdir, out = tmp_path / "ck", tmp_path / "m.json"
    assert train_cli(*TINY, "--save", "t.tar", "--len", 12, "--epochs", 2, "--eval-every", 1,
                     "--checkpoint-dir", ckdir, "--log-dir", tmp_path / "log", "--json", out,
                     "--bs", 8) == 0
    ckpt = torch.load(ckdir / "t.tar", map_location="cpu", weights_only=True)
    assert list(ckpt)[:2] == ["backbone", "centers"]
    assert list(ckpt["backbone"]) == list(DFHNet(12).state_dict())
    assert tuple(ckpt["centers"]["centers"].shape) == (4, 12)
    assert ckpt["method"] == "dcdh" and ckpt["config"]["bits"] == 12
    assert ckpt["config"]["arch"] == "dfhnet" and ckpt["facts"]["num_classes"] == 4
    assert ckpt["data"]["options"] == {"num_identities": 4, "train_per_identity": 6,
                                       "test_per_identity": 2}
    trained = json.loads(out.read_text())
    assert trained["epochs_run"] == 2 and trained["best_epoch"] in (1, 2)
    assert trained["best_loss"] == min(trained["losses"]) == trained["losses"][trained["best_epoch"] - 1]
    logs = list((tmp_path / "log").glob("12bits_synthetic_*.txt"))
    assert len(logs) == 1 and "[epoch: 2]" in logs[0].read_text()
    # the official evaluation command gives the training run's final numbers
    out2, codes = tmp_path / "e.json", tmp_path / "codes.npz"
    assert eval_cli(*TINY, "--load", "t.tar", "--len", 12, "--checkpoint-dir", ckdir,
                    "--json", out2, "--save-codes", codes) == 0
    evaluated = json.loads(out2.read_text())
    assert evaluated["mAP"] == pytest.approx(trained["mAP"], abs=1e-12)
    # without the size flags the built-in data's size comes from the checkpoint
    out3 = tmp_path / "e3.json"
    assert eval_cli("--dataset", "synthetic", "--no-progress", "--load", "t.tar", "--len", 12,
                    "--checkpoint-dir", ckdir, "--json", out3) == 0
    assert json.loads(out3.read_text())["num_database"] == 24
    assert json.loads(out3.read_text())["mAP"] == pytest.approx(trained["mAP"], abs=1e-12)
    z = np.load(codes)
    assert z["db_codes"].shape == (24, 12) and z["query_codes"].shape == (8, 12)
    assert set(np.unique(z["db_codes"])) <= {-1, 1}
    # wrong --len: one line naming the fix
    capsys.readouterr()
    assert eval_cli(*TINY, "--load", ckdir / "t.tar", "--len", 48) == 2
    assert capsys.readouterr().err == f"error: {ckdir / 't.tar'} holds 12-bit codes; pass --len 12\n"


def test_bad_input_never_touches_a_good_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckdir = tmp_path / "checkpoint"
    ckdir.mkdir()
    good = ckdir / "m.tar"
    good.write_bytes(b"a good checkpoint")
    # a fresh run never replaces an existing checkpoint
    assert train_cli(*TINY, "--save", "m.tar") == 2
    assert capsys.readouterr().err == (
        "error: --save checkpoint/m.tar exists; pass --resume auto to continue that run or "
        "--overwrite to start afresh and replace it\n")
    assert good.read_bytes() == b"a good checkpoint"
    # missing dataset: one line saying where it was expected, exit 2
    assert train_cli("--dataset", "facescrub", "--save", "m.tar", "--no-progress",
                     "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FaceScrub not found") and err.count("\n") == 1
    assert good.read_bytes() == b"a good checkpoint"
    # an unusable checkpoint folder is caught before any training
    (tmp_path / "afile").write_text("x")
    assert train_cli(*TINY, "--save", "n.tar", "--checkpoint-dir", tmp_path / "afile" / "sub") == 2
    assert capsys.readouterr().err.startswith(f"error: cannot create --checkpoint-dir {tmp_path / 'afile' / 'sub'}")
    assert train_cli(*TINY, "--len", 0, "--save", "n.tar") == 2
    assert capsys.readouterr().err == "error: argument --len: expected an integer from 1 to 4096, got 0\n"
    assert train_cli(*TINY) == 2
    assert "--save NAME.tar is required" in capsys.readouterr().err
    assert eval_cli(*TINY, "--load", "nothing.tar") == 2
    assert capsys.readouterr().err == ("error: checkpoint not found: looked for "
                                      "checkpoint/nothing.tar or nothing.tar\n")
    assert eval_cli(*TINY, "--load", "m.tar") == 2
    assert "m.tar is not a readable checkpoint" in capsys.readouterr().err
    assert good.read_bytes() == b"a good checkpoint"


def test_dfhnet_rejects_other_sizes(capsys):
    assert train_cli(*TINY, "--save", "x.tar", "--img-size", 64, "--arch", "dfhnet") == 2
    assert "--arch dfhnet takes 32x32 images, not 64x64" in capsys.readouterr().err


def test_learns_on_synthetic_data(tmp_path):
    """A smaller version of the quick start's bar: trained mAP far above untrained."""
    common = ["--dataset", "synthetic", "--synthetic-ids", "8", "--synthetic-train", "16",
              "--synthetic-test", "4", "--no-progress", "--len", 24]
    out = tmp_path / "m.json"
    assert train_cli(*common, "--save", "s.tar", "--epochs", 8, "--eval-every", 0, "--bs", 32,
                     "--checkpoint-dir", tmp_path, "--log-dir", tmp_path, "--json", out) == 0
    trained = json.loads(out.read_text())["mAP"]
    untrained_path = tmp_path / "u.tar"
    torch.manual_seed(0)
    save_checkpoint({"backbone": DFHNet(24).state_dict()}, untrained_path)
    assert eval_cli(*common, "--load", untrained_path, "--json", tmp_path / "u.json") == 0
    untrained = json.loads((tmp_path / "u.json").read_text())["mAP"]
    assert trained > 0.6 and trained > untrained + 0.3, (trained, untrained)
