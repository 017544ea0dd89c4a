"""utils.engine.loop.fit with a toy method (a linear layer on tensor batches):
resume bit-identity, NaN stop, patience, the evaluation schedule, Ctrl-C and
the files it writes, in milliseconds and without any real method."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from data import DataFacts
from data.loaders import TensorBatches
from methods.base import Method, MethodConfig
from utils.engine.checkpoint import load_checkpoint
from utils.engine.files import RunFiles
from utils.engine.loop import (EvalPlan, FitConfig, TrainingError, TrainingInterrupted, fit)


class Toy(Method):
    """Codes of 8 bits from 6 features; the loss is cross-entropy on 4 classes."""
    name = "toy"

    def __init__(self, fail_at=None, constant=False):
        super().__init__(MethodConfig(bits=8), DataFacts(4))
        self.net = nn.Linear(6, 8)
        self.head = nn.Linear(8, 4)
        self.steps, self.fail_at, self.constant = 0, fail_at, constant

    def forward(self, x, labels):
        self.steps += 1
        if self.fail_at is not None and self.steps == self.fail_at[0]:
            if self.fail_at[1] == "nan":
                return torch.tensor(math.nan, requires_grad=True)
            raise KeyboardInterrupt
        loss = F.cross_entropy(self.head(self.net(x)), labels)
        return loss * 0 + 1.0 if self.constant else loss

    def official_state(self, progress=None):
        return {"net": self.net.state_dict(), "head": self.head.state_dict()}

    def load_official_state(self, checkpoint, path="checkpoint", heads=True):
        self.net.load_state_dict(checkpoint["net"])
        self.head.load_state_dict(checkpoint["head"])


class Loaders:
    def __init__(self, seed=0):
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(40, 6, generator=gen)
        y = torch.arange(40) % 4
        self.train = TensorBatches(x, y, 8, shuffle=True, seed=seed)
        self.database = TensorBatches(x, y, 40)
        self.queries = TensorBatches(x[:8], y[:8], 8)


def run(tmp_path, epochs, method=None, resume=None, plan=EvalPlan()):
    torch.manual_seed(0)
    method = method or Toy()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)
    files = RunFiles(last=tmp_path / "m_last.tar", best=tmp_path / "m.tar")
    config = FitConfig(epochs, torch.device("cpu"), files, plan, progress=False, log_every=3)
    if resume is not None:
        method.load_file(resume)
    return method, fit(method, optimizer, scheduler, Loaders(), config, resume)


def test_resume_is_bit_identical(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight, result = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resume = load_checkpoint(tmp_path / "b" / "m_last.tar")
    assert resume["train_state"]["epoch"] == 2 and len(resume["train_state"]["history"]) == 2
    torch.manual_seed(123)  # a resumed run takes every generator from the file
    split, again = run(tmp_path / "b", 4, Toy(), resume)
    for a, b in zip(straight.parameters(), split.parameters()):
        assert torch.equal(a, b)
    assert again.losses == result.losses and len(result.losses) == 4
    a, b = (load_checkpoint(tmp_path / d / "m_last.tar") for d in "ab")
    assert a["optimizer"]["state"][0]["momentum_buffer"].equal(
        b["optimizer"]["state"][0]["momentum_buffer"])
    assert a["lr_scheduler"] == b["lr_scheduler"] and b["train_state"]["finished"]


def test_best_file_is_the_lowest_loss(tmp_path):
    method, result = run(tmp_path, 3)
    best = load_checkpoint(tmp_path / "m.tar")
    assert result.best_epoch == 1 + result.losses.index(min(result.losses))
    assert best["epoch"] == result.best_epoch and best["loss"] == min(result.losses)


def test_nan_stops_naming_the_step_and_keeps_the_files(tmp_path):
    with pytest.raises(TrainingError) as err:
        run(tmp_path, 2, Toy(fail_at=(7, "nan")))  # step 2 of epoch 2 (5 steps an epoch)
    assert str(err.value) == (f"the loss became nan at epoch 2, step 2; stopped, the last good "
                              f"checkpoints are kept ({tmp_path / 'm.tar'} and "
                              f"{tmp_path / 'm_last.tar'}); try a lower --lr")
    assert load_checkpoint(tmp_path / "m_last.tar")["train_state"]["epoch"] == 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(TrainingError, match="at epoch 1, step 1; stopped, no checkpoint had "
                                            "been written yet"):
        run(fresh, 1, Toy(fail_at=(1, "nan")))


def test_patience_stops_after_epochs_without_a_lower_loss(tmp_path):
    _, result = run(tmp_path, 20, Toy(constant=True), plan=EvalPlan(patience=3))
    # epoch 1 is the best; epochs 2..5 are not lower: stop once 4 > 3 have passed
    assert result.best_epoch == 1 and result.epochs_run == 5


def test_evaluations_follow_the_plan(tmp_path, monkeypatch):
    seen = []
    real = Toy.evaluate

    def spy(self, *args, **kwargs):
        seen.append(self.steps)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Toy, "evaluate", spy)
    _, result = run(tmp_path, 4, plan=EvalPlan(frozenset({0, 2}), monitor="mAP"))
    assert seen == [5, 15]  # after the 1st and 3rd epochs of 5 steps
    ckpt = load_checkpoint(tmp_path / "m_last.tar")
    assert ckpt["train_state"]["monitor"] == "mAP" and 0 < ckpt["metrics"]["mAP"] <= 1
    assert result.best_epoch in (1, 3)


def test_ctrl_c_names_the_file_that_holds_the_last_epoch(tmp_path):
    with pytest.raises(TrainingInterrupted) as err:
        run(tmp_path, 3, Toy(fail_at=(8, "interrupt")))
    assert str(err.value) == (f"interrupted in epoch 2; {tmp_path / 'm_last.tar'} holds epoch 1: "
                              f"run the same command with --resume auto to continue")
    assert load_checkpoint(tmp_path / "m_last.tar")["train_state"]["epoch"] == 1
    with pytest.raises(TrainingInterrupted, match="interrupted in epoch 1, before any checkpoint"):
        run(tmp_path, 3, Toy(fail_at=(1, "interrupt")))


class IndexedToy(Toy):
    """A method with per-item state: its batches carry the items' indices, and
    it owns its backward (counted here)."""
    indexed = True

    def __init__(self):
        super().__init__()
        self.seen, self.backwards = [], 0

    def unpack(self, batch, device):
        x, labels, index = batch
        self.seen += index.tolist()
        return x.to(device), labels.to(device)

    def backward(self, loss, scaler=None):
        self.backwards += 1
        super().backward(loss, scaler)


def test_indexed_batches_and_a_method_that_owns_its_backward(tmp_path):
    from data import Splits, make_loaders

    x, y = torch.randn(20, 6), torch.arange(20) % 4

    class Rows(torch.utils.data.Dataset):
        images, labels, transform = x, y, None

        def __len__(self):
            return 20

        def __getitem__(self, i):
            return x[i], y[i]

    splits = Splits(Rows(), Rows(), Rows(), 4, None, in_memory=True)
    method = IndexedToy()
    loaders = make_loaders(splits, 8, torch.device("cpu"), indexed=True)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    config = FitConfig(2, torch.device("cpu"), RunFiles(last=tmp_path / "l.tar"), progress=False)
    fit(method, optimizer, scheduler, loaders, config)
    assert sorted(method.seen) == sorted(list(range(20)) * 2)  # every item once an epoch
    assert method.backwards == 6  # 3 batches an epoch, each through the method's backward
