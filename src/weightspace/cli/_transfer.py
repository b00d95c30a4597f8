"""``weightspace transfer``: which zoo model should I fine-tune for a new task?"""

from __future__ import annotations

import argparse

from tabulate import tabulate

from ..tasks.transfer import BATCH_SIZE, LR, RANKERS, TARGET_TASKS, TransferError, select_model

EXAMPLES = """examples:
  weightspace transfer --run runs/gnn --zoo zoos/std --task digits-rotated --budget 50
  weightspace transfer --run runs/gnn --zoo zoos/std --task mnist --budget 100 --top 10
  weightspace transfer --zoo zoos/std --task digits-0to4 --budget 10 --ranker source_accuracy
"""

TASKS_HELP = "; ".join(f"{t.name}: {t.description}" for t in TARGET_TASKS.values())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="rank zoo models as starting points for a target task, fine-tune the best",
        description="Rank the zoo models that fit a target task held out of the zoo's "
        "training, then fine-tune the top pick for --budget steps (Adam, lr "
        f"{LR:g}, batch {BATCH_SIZE}) and compare it with its architecture trained from "
        "scratch and with a random pick, on the target's test split. The learned ranker "
        "is a boosted-tree score of the run's embedding, predicted and catalog accuracy, "
        "size and source data set of a model, fitted to zoo models fine-tuned for the "
        "budget on the other target tasks (never this one).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", dest="run_dir", help="run directory (from 'weightspace train')")
    p.add_argument("--zoo", required=True, help="zoo directory the candidates come from")
    p.add_argument("--task", required=True, help=f"target task. {TASKS_HELP}")
    p.add_argument("--budget", type=int, default=50, help="fine-tuning steps (default 50)")
    p.add_argument("--top", type=int, default=5, help="candidates to list (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of samples and fine-tuning")
    p.add_argument(
        "--ranker",
        default="learned",
        choices=RANKERS,
        help="how to rank (default learned; learned and predicted_accuracy need --run)",
    )
    p.add_argument(
        "--candidates", type=int, help="rank a random sample of this many (default: all)"
    )
    p.add_argument(
        "--outcome-models",
        type=int,
        default=24,
        help="models fine-tuned on each other target to fit the learned ranker (default 24)",
    )
    p.add_argument("--data-dir", help="MNIST folder or its parent (or set WEIGHTSPACE_DATA)")
    p.add_argument(
        "--workers", type=int, default=2, help="processes fine-tuning (default 2, one thread each)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise TransferError(f"--top must be an int >= 1. Got {args.top}.")
    selection = select_model(
        args.run_dir,
        args.zoo,
        args.task,
        args.budget,
        args.seed,
        ranker=args.ranker,
        candidates=args.candidates,
        outcome_models=args.outcome_models,
        data_dir=args.data_dir,
        workers=args.workers,
    )
    ranking = selection.ranking
    print(
        f"target {selection.target} ({TARGET_TASKS[selection.target].description}): "
        f"{len(ranking)} candidates ranked by {selection.ranker}"
    )
    if selection.outcome_models:
        print(
            f"  fitted to {selection.outcome_models} fine-tuning runs of zoo models for "
            f"{selection.budget} steps on {', '.join(selection.outcome_targets)}"
        )
    top = ranking.head(args.top)
    rows = [
        (k + 1, r.id, r.score, r.architecture, r.n_params, r.source_accuracy)
        for k, r in enumerate(top.itertuples())
    ]
    print(
        tabulate(
            rows,
            headers=("rank", "id", "score", "architecture", "params", "source acc"),
            floatfmt=".3f",
            intfmt=",",
        )
    )
    best, random_id = ranking["id"].iloc[0], selection.random_id
    architecture = ranking.set_index("id")["architecture"]
    print(f"\nafter {selection.budget} fine-tuning steps, on the {selection.target} test split:")
    labels = {
        "top pick": f"{best} ({architecture[best]})",
        "from scratch": f"{architecture[best]}, freshly initialised",
        "random pick": f"{random_id} ({architecture[random_id]})",
    }
    print(
        tabulate(
            [(k, labels[k], acc, loss) for k, (acc, loss) in selection.results.items()],
            headers=("start", "model", "accuracy", "loss"),
            floatfmt=".3f",
        )
    )
    accuracy = {k: acc for k, (acc, _) in selection.results.items()}
    print(
        f"top pick vs from scratch: {accuracy['top pick'] - accuracy['from scratch']:+.3f}; "
        f"vs random pick: {accuracy['top pick'] - accuracy['random pick']:+.3f} "
        f"({selection.seconds:.1f} s)"
    )
    return 0
