#!/usr/bin/env bash
# What `fvm use` + `flutter pub get` would do: fill the per-key tool caches.
set -eu
echo "flavor=$FLAVOR platform=$PLATFORM fvm_flavor=$FVM_FLAVOR branch=${LIGHTCI_BRANCH:-none}"
echo "HOME=$HOME"
echo "PUB_CACHE=$PUB_CACHE"
echo "GRADLE_USER_HOME=$GRADLE_USER_HOME"
mkdir -p "$PUB_CACHE/hosted/pub.dev" "$GRADLE_USER_HOME/caches"
if [ -e "$PUB_CACHE/hosted/pub.dev/.fetched" ]; then
  echo "pub cache warm: reused from an earlier build of key $LIGHTCI_KEY"
else
  echo "pub cache cold: fetching packages"
  date -u +%FT%TZ > "$PUB_CACHE/hosted/pub.dev/.fetched"
fi
echo "{\"flavor\": \"$FLAVOR\"}" > pubspec.lock.json
