"""Train SHAM (DCHN's semantic hashing autoencoder module), the published
trainSHAM.py: W [classes, bits] between the label space and the Hamming
space, written to SHAM/SHAM_W_C<classes>_O<bits>_G<gama>_A<available>.mat
(key 'W'), which main_DCHN.py reads.

Published form:  python trainSHAM.py --datasets mirflickr25k --output_shape 64 --gama 1 --available_num 100

The --available_num labelled rows are drawn from the training labels with
--seed (the published script draws them unseeded).  An existing W file is
reused, as published (--overwrite recomputes it).  The published script
shares main_DCHN.py's parser: its training flags are accepted here and do
nothing (they are not listed).
"""

import argparse
import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from methods.dchn import DCHNConfig
from pipeline.cli import add_multiview_args, multiview_data
from utils.cli import (ArgumentParser, add_dataclass_args, dataclass_values, run_script,
                       seed_int, write_json)

# main_DCHN.py's flags that a published trainSHAM.py command line may carry
IGNORED = {"--mode": 1, "--view": 1, "--alpha": 1, "--epochs": 1, "--lr_update": 1,
           "--batch_sizes": "+", "--lr": "+", "--beta1": 1, "--beta2": 1, "--prefix": 1,
           "--num_workers": 1, "--gpu_id": 1, "--multiprocessing": 0, "--pretrained": 1,
           "--device": 1, "--log-dir": 1, "--no-progress": 0, "--deterministic": 0}


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    add_dataclass_args(p, DCHNConfig, only=("bits", "gama", "available_num", "sham_dir"),
                       defaults=True)
    add_multiview_args(p)
    p.add_argument("--seed", type=seed_int, default=0,
                   help="draws the --available_num labelled rows")
    p.add_argument("--overwrite", action="store_true", help="recompute an existing W file")
    p.add_argument("--save-loss", action="store_true",
                   help="also write SHAM_loss_C..._A....mat (the published save_loss)")
    p.add_argument("--json", metavar="OUT", help="write W's facts (shape, best step, losses)")
    for flag, nargs in IGNORED.items():
        kind = {"nargs": "+"} if nargs == "+" else {"action": "store_true"} if nargs == 0 else {}
        p.add_argument(flag, dest=f"ignored{flag}", help=argparse.SUPPRESS, **kind)
    return p


def main(args):
    from data.multiview import training_labels
    from methods.dchn import sham_file
    from utils.engine.files import check_writable_file

    if args.json:
        check_writable_file(args.json, "--json")
    print("SHAM starting...")
    data = multiview_data(args)
    labels = training_labels(data.dataset, data.root, data.options)
    config = DCHNConfig(**dataclass_values(args, DCHNConfig))
    sham = sham_file(config, labels, args.seed, args.overwrite)
    facts = {"file": str(sham.path), "reused": sham.reused, "shape": list(sham.W.shape)}
    if sham.reused:
        print(f"SHAM has been trained. W has been reused! ({sham.path}; --overwrite recomputes it)")
    else:
        r = sham.result
        for step in (0, 20, 40):
            print("iters %d: %.5f" % (step, r.losses[step]))
        if args.save_loss:
            from scipy.io import savemat

            savemat(sham.path.name.replace("SHAM_W_", "SHAM_loss_"), {"loss": r.losses})
        print(f"W of step {r.best_iter} (loss {r.losses[r.best_iter]:.5f}) written to {sham.path}")
        facts.update(best_iter=r.best_iter, losses=r.losses.tolist())
    print("SHAM finished.")
    if args.json:
        write_json(args.json, facts)
    return facts


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
