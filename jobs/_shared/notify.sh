#!/usr/bin/env bash
# A stage shared by every job that lists "notify" and has no notify.sh of its own.
set -eu
echo "notify: $LIGHTCI_JOB #$LIGHTCI_BUILD_NUMBER ($LIGHTCI_KEY) finished its stages"
ls "$LIGHTCI_ARTIFACTS"
