#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image. run_autograder needs only
# python3 and its standard library, which Gradescope's base images have: nothing is installed.
# Configuration lives in config.json (next to this file in the zip), never in exports here:
# variables exported by setup.sh do not reach run_autograder.
#
# The build checks config.json, so that a mistake in it fails the build (with what to fix)
# instead of the first student's submission: its shape always, its values against the service
# when the service answers (only a warning when it does not).
set -euo pipefail
python3 --version
bash "$(dirname "$0")/run_autograder" --check-config
