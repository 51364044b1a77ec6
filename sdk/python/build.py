#!/usr/bin/env python3
"""Build a Python connector into a Switchboard component.

    python sdk/python/build.py <connector dir> -o <out.wasm>

Run it with the Python of the toolchain's virtual environment (``make
connectors`` creates it in ``target/python-venv`` from requirements.txt,
pinned with hashes). The connector's directory holds ``app.py``, whose
``WitWorld`` class (a ``switchboard_connector.Connector``) is the component's
export; the SDK is this directory's ``switchboard_connector`` package.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The world: beside this script in a scaffolded connector, else the repository's.
WIT = os.environ.get("SWITCHBOARD_WIT") or next(
    (
        d
        for d in (
            os.path.join(HERE, "wit", "switchboard-connector-0.1.0"),
            os.path.join(HERE, "..", "..", "wit", "switchboard-connector-0.1.0"),
        )
        if os.path.isdir(d)
    ),
    os.path.join(HERE, "wit", "switchboard-connector-0.1.0"),
)

# The world imports two interfaces named `types` (wasi:http's and ours):
# componentize-py needs them apart, and the SDK imports them by these names.
INTERFACE_NAMES = [
    "--import-interface-name",
    "wasi:http/types@0.2.12=types",
    "--import-interface-name",
    "switchboard:connector/types@0.1.0=sb_types",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("connector", help="directory holding app.py")
    parser.add_argument("-o", dest="out", required=True, help="the .wasm to write")
    args = parser.parse_args()
    app = os.path.join(args.connector, "app.py")
    if not os.path.isfile(app):
        print(f"{app}: not found (a Python connector is an app.py with a WitWorld class)", file=sys.stderr)
        return 2
    tool = shutil.which("componentize-py", path=os.path.dirname(sys.executable))
    if tool is None:
        print(
            "componentize-py is not installed for this Python: run `make connectors`, or\n"
            f"  python3 -m venv venv && venv/bin/pip install --require-hashes -r {HERE}/requirements.txt\n"
            "and run this script with venv/bin/python",
            file=sys.stderr,
        )
        return 1
    started = time.monotonic()
    out = os.path.abspath(args.out)
    subprocess.run(
        [tool, "-d", WIT, "-w", "connector", *INTERFACE_NAMES, "componentize", "app",
         "-p", os.path.abspath(args.connector), "-p", HERE, "-o", out],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    size = os.path.getsize(out) / 1e6
    print(f"built {out} ({size:.1f} MB) in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
