"""``python -m configs --markdown`` prints docs/CONFIG.md's key tables; ``--write`` updates them in place."""
import argparse
import sys

from configs import REPO_ROOT
from configs.docs import tables, write_tables

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--write", action="store_true", help="replace the tables in docs/CONFIG.md")
args = parser.parse_args()
if args.write:
    write_tables(REPO_ROOT / "docs" / "CONFIG.md")
else:
    for name, table in tables().items():
        sys.stdout.write(f"<!-- keys:{name} -->\n{table}\n")
