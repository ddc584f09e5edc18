#!/usr/bin/env bash
# Example ways to run the dpm-flair image (see docker/README.md). Nothing here was run on the build machine:
# it has no Docker daemon. Usage:
#   docker/run_example.sh build                  # build the image from the repository root
#   docker/run_example.sh gadgetron              # Gadgetron on :9002, external gadget started per connection
#   docker/run_example.sh server                 # connect mode: long-lived dpm-server + Gadgetron on one network
#   docker/run_example.sh replay RAW.h5 OUT_DIR  # offline: ISMRMRD raw file -> images + DICOM, no Gadgetron
#   docker/run_example.sh stop                   # stop the containers started here
set -euo pipefail

IMAGE="${IMAGE:-dpm-flair:latest}"
PORT="${PORT:-9002}"                       # Gadgetron port on the host
SERVER_PORT="${SERVER_PORT:-18000}"        # dpm-server port inside the docker network (connect mode)
MODEL_DIR="${MODEL_DIR:-$PWD/models}"      # folder with the safetensors checkpoint + JSON card
NETWORK="${NETWORK:-dpm-net}"
GPUS="${GPUS:-all}"                        # e.g. '"device=1"' to pin one GPU

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

case "${1:-gadgetron}" in
  build)
    DOCKER_BUILDKIT=1 docker build -f "$repo/docker/Dockerfile" -t "$IMAGE" "$repo"
    ;;
  gadgetron)
    # Gadgetron spawns `python -m gadgetron <port> <module> <target>` for each <external><execute .../> stream;
    # the model is loaded once per connection.
    docker run -d --rm --name dpm-gadgetron --gpus "$GPUS" -p "$PORT:9002" \
      -v "$MODEL_DIR:/models:ro" "$IMAGE"
    echo "Gadgetron listening on localhost:$PORT; send data with e.g."
    echo "  gadgetron_ismrmrd_client -a localhost -p $PORT -f raw.h5 -c <dpm stream>.xml -o out.h5"
    ;;
  server)
    # Connect mode: the model stays loaded in dpm-server; Gadgetron connects to it for every scan through an
    # <external><connect port="$SERVER_PORT" address="dpm-server"/> node (see docker/README.md).
    docker network inspect "$NETWORK" > /dev/null 2>&1 || docker network create "$NETWORK"
    docker run -d --rm --name dpm-server --network "$NETWORK" --gpus "$GPUS" \
      -v "$MODEL_DIR:/models:ro" --entrypoint dpm-server "$IMAGE" --port "$SERVER_PORT"
    docker run -d --rm --name dpm-gadgetron --network "$NETWORK" -p "$PORT:9002" "$IMAGE"
    echo "dpm-server on dpm-server:$SERVER_PORT (docker network $NETWORK), Gadgetron on localhost:$PORT"
    echo "check the server's options with: docker run --rm --entrypoint dpm-server $IMAGE --help"
    ;;
  replay)
    raw="$(realpath "${2:?give the ISMRMRD raw file}")"
    out="$(realpath -m "${3:?give an output folder}")"
    mkdir -p "$out"
    docker run --rm --gpus "$GPUS" -v "$MODEL_DIR:/models:ro" -v "$(dirname "$raw"):/in:ro" -v "$out:/out" \
      --entrypoint dpm-replay "$IMAGE" "/in/$(basename "$raw")" --out /out
    ;;
  stop)
    docker stop dpm-gadgetron dpm-server 2> /dev/null || true
    ;;
  *)
    sed -n '2,9p' "$0"
    exit 2
    ;;
esac
