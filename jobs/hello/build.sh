#!/usr/bin/env bash
set -eu
echo "$GREETING from lightci build #$LIGHTCI_BUILD_NUMBER (branch '${LIGHTCI_BRANCH:-none}')"
echo "workspace: $PWD"
