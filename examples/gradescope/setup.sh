#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image. run_autograder needs only
# python3 and its standard library, which Gradescope's base images have: nothing is installed.
# Configuration lives in config.json (next to this file in the zip), never in exports here:
# variables exported by setup.sh do not reach run_autograder.
set -euo pipefail
python3 --version
