"""Train SHAM (DCHN's semantic hashing autoencoder module), the published
trainSHAM.py: W [classes, bits] between the label space and the Hamming
space, written to SHAM/SHAM_W_C<classes>_O<bits>_G<gama>_A<available>.mat
(key 'W'), which main_DCHN.py reads.

Published form:  python trainSHAM.py --datasets mirflickr25k --output_shape 64 --gama 1 --available_num 100

The --available_num labelled rows are drawn from the training labels with
--seed (the published script draws them unseeded).  An existing W file is
reused, as published (--overwrite recomputes it).
"""

import sys
from pathlib import Path

import numpy as np

from main_DCHN import add_config_args
from utils.cli import ArgumentParser, UsageError, ensure_dir, run_script, write_json


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    add_config_args(p)
    p.add_argument("--overwrite", action="store_true", help="recompute an existing W file")
    p.add_argument("--save-loss", action="store_true",
                   help="also write SHAM_loss_C..._A....mat (the published save_loss)")
    p.add_argument("--json", metavar="OUT", help="write W's facts (shape, best step, losses)")
    p.add_argument("--no-progress", action="store_true",
                   help="accepted for symmetry with main_DCHN.py (SHAM shows no progress bar)")
    return p


def main(args):
    from data.multiview import training_labels
    from main_DCHN import load_views
    from models.sham import load_sham, save_sham, sham_file_name, train_sham

    print("SHAM starting...")
    if args.datasets == "synthetic":
        data = load_views(args, 0)
        labels = np.asarray(data.views[0].labels)[data.views[0].train]
    else:
        options = {"views": args.views, "labels_key": args.labels_key, "query": args.query_size,
                   "train": args.train_size}
        labels = training_labels(args.datasets, args.data_root, options)
    num_classes = labels.shape[1]
    if args.available_num > labels.shape[0]:
        raise UsageError(f"--available_num {args.available_num} exceeds the {labels.shape[0]} "
                         f"training rows of {args.datasets}")
    sham_dir = ensure_dir(args.sham_dir, "--sham-dir")
    path = sham_dir / sham_file_name(num_classes, args.output_shape, args.gama, args.available_num)
    if path.is_file() and not args.overwrite:
        W = load_sham(path)
        print(f"SHAM has been trained. W has been reused! ({path}; --overwrite recomputes it)")
        facts = {"file": str(path), "reused": True, "shape": list(W.shape)}
    else:
        order = np.random.RandomState(args.seed).permutation(labels.shape[0])
        available = labels[order[:args.available_num]] if args.available_num > 0 else None
        result = train_sham(num_classes, args.output_shape, args.gama, available)
        for step in (0, 20, 40):
            print("iters %d: %.5f" % (step, result.losses[step]))
        save_sham(path, result.W)
        if args.save_loss:
            from scipy.io import savemat

            savemat(Path(f"SHAM_loss_C{num_classes}_O{args.output_shape}_G{args.gama:g}_"
                         f"A{args.available_num}.mat"), {"loss": result.losses})
        print(f"W of step {result.best_iter} (loss {result.losses[result.best_iter]:.5f}) "
              f"written to {path}")
        facts = {"file": str(path), "reused": False, "shape": list(result.W.shape),
                 "best_iter": result.best_iter, "losses": result.losses.tolist()}
    print("SHAM finished.")
    if args.json:
        write_json(args.json, facts)
    return facts


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
