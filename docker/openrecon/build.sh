#!/usr/bin/env bash
# Build the OpenRecon image of dpm-flair and package it as OpenRecon installs it (image tar + PDF in one zip).
# Usage: docker/openrecon/build.sh [BASE_IMAGE]   (default dpm-flair:latest, built from docker/Dockerfile)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base="${1:-dpm-flair:latest}"
ui="${here}/dpm_flair_json_ui.json"
python3 -c "import json, sys; json.load(open(sys.argv[1]))" "${ui}"          # refuse a broken UI file early
version="$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['general']['version'])" "${ui}")"
name="OpenRecon_dpm-flair_DPMFLAIR_V${version}"
tag="$(echo "openrecon_dpm-flair_dpmflair:v${version}" | tr '[:upper:]' '[:lower:]')"
metadata="$(base64 -w0 "${ui}")"
DOCKER_BUILDKIT=1 docker build --build-arg "BASE_IMAGE=${base}" --build-arg "OPENRECON_METADATA=${metadata}" \
    -f "${here}/Dockerfile" -t "${tag}" "${here}"
out="${here}/build"
mkdir -p "${out}"
docker save -o "${out}/${name}.tar" "${tag}"
echo "image ${tag} saved to ${out}/${name}.tar; add the application's PDF (${name}.pdf) and zip both for the scanner"
