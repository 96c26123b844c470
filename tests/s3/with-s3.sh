#!/usr/bin/env bash
# Run a command with a fresh SeaweedFS S3 server on 127.0.0.1 (see seaweed.py), then stop it by
# pid whatever the command's outcome; exit with the command's status.
#   with-s3.sh PYTHON CMD [ARGS...]
set -euo pipefail
python=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
state=$(mktemp -d "${TMPDIR:-/tmp}/marsh-s3.XXXXXX")
trap '"$python" "$here/seaweed.py" stop "$state"; rm -rf "$state"' EXIT
eval "$("$python" "$here/seaweed.py" start "$state")"
echo "SeaweedFS S3 at $MARSH_TEST_S3_ENDPOINT and $MARSH_TEST_S3_ENDPOINT_TLS (state in $state)" >&2
"$@"
