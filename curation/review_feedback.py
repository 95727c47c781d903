"""Review feedback before it becomes training data.

    review_feedback list [--all] [--sheet FILE]         what waits for a review (--all: every row)
    review_feedback accept ID [ID ...] [--category C]   keep as training data (with C, if given)
    review_feedback accept --confirmed                  keep every waiting confirmation (no conflict)
    review_feedback reject ID [ID ...]                  never use

A row with conflicting labels is listed as ID@N, N its newest conflict: deciding on ID@N records that
you saw the conflicts up to N, so one that arrives between your listing and your decision opens the row
again (a bare ID takes the conflicts as they are when you decide).

`--feedback DIR` and `--feedback-db URL` choose the store (default data/feedback, SQLite there).
Every row waits for a review, confirmations too (anyone can confirm a wrong answer when the endpoint has
no key), and a conflicting label that arrives later opens it again. `./tasks/data.sh add --feedback`
takes the accepted rows.
"""

import argparse
import getpass
import os
import re
import sys
from pathlib import Path

import numpy as np

from api.feedback_schema import DB_URL_ENV
from api.feedback_store import (
    ACCEPTED,
    DEFAULT_FEEDBACK_DIR,
    REJECTED,
    FeedbackRecord,
    FeedbackStore,
)
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.versions import FASHION_MNIST
from text_recognizer.labels import OUT_OF_SCOPE, LabelError, class_index
from text_recognizer.preprocessing import image_bytes_to_input
from training.image_grid import save_image_grid
from training.table import format_table


def review_target(text: str) -> tuple[int, int | None]:
    """`ID` or `ID@N` (the newest conflict seen), in ASCII digits."""
    found = re.fullmatch(r"([0-9]+)(?:@([0-9]+))?", text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not ID or ID@CONFLICT (e.g. 12 or 12@3)")
    return int(found.group(1)), int(found.group(2)) if found.group(2) else None


def listing(store: FeedbackStore, everything: bool) -> list[FeedbackRecord]:
    rows = store.training_rows()
    waiting = set(rows.unreviewed) | set(rows.conflicted)
    return [record for record in store.all() if everything or record.id in waiting]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="review_feedback.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feedback", type=Path, default=DEFAULT_FEEDBACK_DIR, metavar="DIR")
    parser.add_argument(
        "--feedback-db",
        default=os.environ.get(DB_URL_ENV),
        metavar="URL",
        help=f"SQLAlchemy URL of the feedback database (default: {DB_URL_ENV}, else SQLite in the folder)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list", help="feedback waiting for a review")
    show.add_argument("--all", action="store_true", help="every row, with its review")
    show.add_argument("--sheet", type=Path, help="also write a contact sheet (PNG) of the model inputs")
    for decision in ("accept", "reject"):
        command = commands.add_parser(decision)
        command.add_argument("targets", type=review_target, nargs="*", metavar="ID[@N]")
        command.add_argument("--reviewer", default=getpass.getuser())
        if decision == "accept":
            command.add_argument("--category", help="the correct category, if not the sender's")
            command.add_argument("--confirmed", action="store_true", help="every waiting confirmation")
    args = parser.parse_args(argv)
    confirmed = getattr(args, "confirmed", False)
    targets = getattr(args, "targets", [])
    if args.command != "list" and (confirmed == bool(targets) or (confirmed and args.category)):
        parser.error(
            f"{args.command}: give IDs" + (", or --confirmed alone" if args.command == "accept" else "")
        )
    store = FeedbackStore.at(args.feedback, args.feedback_db)
    try:
        if args.command == "list":
            show_listing(store, listing(store, args.all), args.sheet)
            return 0
        label = category = None
        if getattr(args, "category", None):
            classes = (*Manifest.named(FASHION_MNIST).classes, OUT_OF_SCOPE)  # the served model's labels
            label = class_index(args.category, classes)
            category = classes[label]
        ids = [feedback_id for feedback_id, _ in targets]
        seen = {feedback_id: newest for feedback_id, newest in targets if newest is not None}
        if confirmed:  # waiting, without a conflict: conflicted rows need a decision each
            waiting = store.training_rows().unreviewed
            ids = [record.id for record in store.all() if record.confirmed and record.id in waiting]
            seen = dict.fromkeys(ids)  # none seen: a conflict from now on opens the row again
        decision = ACCEPTED if args.command == "accept" else REJECTED
        store.review(ids, decision, args.reviewer, label, category, seen)
    except (KeyError, LabelError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    print(f"{args.command}ed {len(ids)} row(s)")
    return 0


def show_listing(store: FeedbackStore, records: list[FeedbackRecord], sheet: Path | None) -> None:
    reviews, conflicts, newest = store.reviews(), store.conflicts(), store.newest_conflicts()
    rows = [
        {
            "id": f"{r.id}@{newest[r.id]}" if r.id in newest else r.id,
            "category": r.category,
            "predicted": f"{r.predicted_category} ({r.predicted_confidence:.2f})",
            "confirmed": r.confirmed,
            "conflicts": ", ".join(c.category for c in conflicts.get(r.id, [])) or "-",
            "review": f"{reviews[r.id].decision}: {reviews[r.id].category}" if r.id in reviews else "-",
            "image": str(r.image_path),
        }
        for r in records
    ]
    print(format_table(rows) if rows else "nothing waits for a review")
    if sheet and records:
        inputs = [image_bytes_to_input(r.image_path.read_bytes()) for r in records]
        captions = [f"{r.id}: {r.category}" for r in records]
        save_image_grid([np.asarray(i) for i in inputs], captions, sheet, "feedback waiting for a review")
        print(f"contact sheet: {sheet}")


if __name__ == "__main__":
    sys.exit(main())
