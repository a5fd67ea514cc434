"""python -m benchmarks.gpu_perf [--quick] [--peers DIR] [--readme]

Prints (markdown) the calibration table (the model's predictions for flash-maxsim and
late-interaction-kernels against their published A100/H100 times) and the side-by-side table
(kdops and both peers at the same shapes, all PREDICTED, each beside its calibration error).

--quick  : uses the SASS summaries and access counts cached in benchmarks/gpu_perf/profiles.json
           (seconds; no compiler, no peers needed).
--readme : prints only the README's side-by-side table (H100, predicted, with the calibration error).
otherwise: recompiles first. --peers DIR names the peers' unpacked wheels or `pip install
           --target` directory (flash-maxsim==0.3.0, late-interaction-kernels==0.4.5); without it
           the peers' cached summaries are kept and said so. kdops' cubins are compiled with nvcc,
           and its forward is run on the simulator with the access recorder (accesses.py, g++).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import report
from .compile_all import PROFILES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_perf")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", default=None)
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args(argv)
    if not args.quick:
        from . import accesses, compile_all, kdops_profile

        if args.peers:
            compile_all.peer_profiles(args.peers, save=compile_all.merge_into_cache)
        else:
            print("(no --peers DIR: the peers' SASS summaries are the cached ones)", file=sys.stderr)
        compile_all.merge_into_cache(kdops_profile.fresh())
        compile_all.merge_into_cache(accesses.fresh())
    profiles = json.loads(PROFILES.read_text())
    print(report.readme_table(profiles) if args.readme else report.markdown(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
