"""``python -m benchmarks.worker FUNCTION KWARGS_JSON RESULT_PATH``: one measured run.

Calls ``benchmarks.contenders.FUNCTION(**kwargs)`` in this fresh process and
writes what it returns as JSON to RESULT_PATH (a contender whose optional
package is missing returns ``{"skipped": reason}``).
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    function, kwargs, result_path = argv
    from benchmarks import contenders

    with contextlib.redirect_stdout(sys.stderr):  # the result travels by file, not stdout
        result = getattr(contenders, function)(**json.loads(kwargs))
    # The peak while running, before interpreter shutdown (which pages in ~80 MiB of
    # library code: the harness's wait4 figure for the whole process includes it).
    result["run_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
