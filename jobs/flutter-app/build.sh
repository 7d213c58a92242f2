#!/usr/bin/env bash
# Stands in for `flutter build apk --flavor $FLAVOR` and a fastlane lane.
set -eu
test -f pubspec.lock.json || { echo "setup did not run"; exit 1; }
out="$LIGHTCI_ARTIFACTS/app-$FLAVOR-$PLATFORM.txt"
echo "built $FLAVOR/$PLATFORM for lane $FASTLANE_LANE at $(date -u +%FT%TZ)" > "$out"
echo "gradle daemon home: $GRADLE_USER_HOME" >> "$out"
echo "artifact: $out"
