"""A study worker process: `python -m ditkit.study.worker DIR INDEX JOBS` runs its share of DIR's runs."""

from __future__ import annotations

import sys

from ditkit.errors import UserError


def main(argv: list[str]) -> int:
    from ditkit.study.runner import run_worker

    out, index, jobs = argv[0], int(argv[1]), int(argv[2])
    try:
        run_worker(out, index, jobs)
    except UserError as err:
        print(f"error: worker {index}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
