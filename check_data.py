"""Check a dataset against its protocol before training.

  python check_data.py --dataset imagelist --protocol nuswide21 --data-root DIR
  python check_data.py --dataset cifar10 --data-root data/cifar --json check.json

Reads the dataset as training would and reports, one line per kind of problem
with its count and an example: split sizes other than the protocol's, a label
width other than its own, entries without any label, duplicate entries,
queries in the database (or a training set where the protocol does not put
it), missing or unreadable images (each opened once), CIFAR-10 batches that
are not the published files.  The last line sums up; exit status 2 when the
protocol is not met (docs/protocols.md).
"""

import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from pipeline.cli import dataset_list, dataset_type, protocol_type
from utils.cli import ArgumentParser, UserError, run_script, worker_count, write_json


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True, type=dataset_type(None),
                   help=f"dataset: {dataset_list(None)}")
    p.add_argument("--data-root", help="dataset folder (default: the dataset's own location; "
                                       "imagelist: required, the root the listed paths are under)")
    p.add_argument("--protocol", type=protocol_type,
                   help="the protocol to check against (default: the dataset's own; imagelist: "
                        "nuswide21, nuswide81, coco, imagenet100, mirflickr25k, voc2012)")
    p.add_argument("--list-dir", help="imagelist: the folder of the list files, when not "
                                      "--data-root")
    p.add_argument("--download", action="store_true",
                   help="CIFAR-10: download torchvision's copy when it is missing (online)")
    p.add_argument("--workers", type=worker_count,
                   help="threads that open the images (default: one per core, up to 8)")
    p.add_argument("--no-images", action="store_true",
                   help="check the lists only, without opening the images")
    p.add_argument("--json", metavar="OUT", help="write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args):
    from data import DataRequest
    from data.check import check_dataset
    from utils.engine.files import Output, claim_outputs

    if args.json:
        claim_outputs([Output(args.json, "--json")], lock=False)
    options = {"download": args.download, "list_dir": args.list_dir}
    request = DataRequest(root=args.data_root, augment=False,
                          options={k: v for k, v in options.items() if v})
    result = check_dataset(args.dataset, request, args.protocol, images=not args.no_images,
                           workers=max(1, args.workers) if args.workers is not None else None,
                           progress=None if args.no_progress else progress_bar)
    for problem in result.problems:
        print(problem.text)
    if args.json:
        write_json(args.json, result.as_dict())
    if not result.ok:
        raise UserError(result.summary())
    print(result.summary())
    return result.as_dict()


def progress_bar(iterable, total, desc):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, unit="image")


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
