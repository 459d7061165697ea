#!/usr/bin/env python
"""Write the paper's result tables (Tables 2-6 as Markdown and CSV) from the pipeline's measured results.

    python scripts/make_tables.py --results results/cpu_scale [--results_doc docs/RESULTS.md]

Writes ``tables.md``, ``table*.csv``, ``roc.png`` and ``leep.png`` into ``--results`` from its chains' result files
(``mstl_monai.pipeline.tables``, whose docstring says which files and tables), prints the tables, and with
``--results_doc`` puts them between that page's ``<!-- results:start -->`` and ``<!-- results:end -->`` markers
(``docs/RESULTS.md``; ``--readme`` is the option's former name).
"""

from __future__ import annotations

import argparse
import sys

from mstl_monai.pipeline.tables import SEED_NOTE, write_tables  # noqa: F401  (SEED_NOTE: used by the tests)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/cpu_scale")
    p.add_argument("--results_doc", "--readme", dest="results_doc", default=None,
                   help="also put the tables between the results markers of this Markdown file (docs/RESULTS.md)")
    a = p.parse_args(argv)
    try:
        md = write_tables(a.results, a.results_doc)
    except ValueError as e:  # no finished chain, a page without markers, a predictions file of other images
        raise SystemExit(str(e)) from None
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
