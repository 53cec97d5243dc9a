#!/usr/bin/env bash
# The embedded default, end to end on one Debian 12 machine (run as root):
#   1. install host packages, npm ci, build;
#   2. start a local registry (the distribution registry from Debian) on 127.0.0.1:${OBDKIT_DEMO_PORT:-5000};
#   3. make a Debian bookworm base image from Debian packages (debootstrap minbase, made once and cached)
#      and push it as an ordinary OCI image;
#   4. build examples/Dockerfile on it into an overlaybd image and push it;
#   5. mount the pushed image lazily from the registry and print a file from it.
# State lives under ${OBDKIT_DEMO_DIR:-/var/lib/obdkit-demo}; running it again reuses the cached base and build steps.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${OBDKIT_DEMO_DIR:-/var/lib/obdkit-demo}
PORT=${OBDKIT_DEMO_PORT:-5000}
REGISTRY=127.0.0.1:$PORT
BASE=$REGISTRY/debian:bookworm
IMAGE=$REGISTRY/obdkit/hello:latest
obdkit() { node bin/obdkit.js "$@"; }

step() { printf '\n==> %s\n' "$*"; }

step "host packages, npm ci, build"
bash scripts/setup-host.sh
npm ci --no-audit --no-fund
npm run build

step "local registry on $REGISTRY"
mkdir -p "$STATE/registry"
if curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
  echo "a registry already answers on $REGISTRY; using it"
else
  cat >"$STATE/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YAML
  nohup docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry/registry.log" 2>&1 &
  echo $! >"$STATE/registry/pid"
  for _ in $(seq 1 50); do curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://$REGISTRY/v2/" >/dev/null || { echo "registry did not start; see $STATE/registry/registry.log" >&2; exit 1; }
  echo "started (pid $(cat "$STATE/registry/pid"); stop it with: kill \$(cat $STATE/registry/pid))"
fi

step "Debian bookworm base image from Debian packages → $BASE"
obdkit base-image "$BASE" --root "$STATE/root"

step "build examples/Dockerfile into an overlaybd image → $IMAGE"
obdkit build --root "$STATE/root" --build-arg "BASE=$BASE" \
  --output "type=image,name=$IMAGE,push=true,registry.insecure=true" examples

step "what was pushed"
obdkit image inspect "$IMAGE"

step "mount the image lazily from the registry and read a file from it"
MNT=$(mktemp -d)
obdkit mount "$IMAGE" "$MNT"
trap 'obdkit umount "$MNT" >/dev/null 2>&1 || true; rmdir "$MNT" 2>/dev/null || true' EXIT
echo "--- $MNT/app/built-at-build-time.txt"
cat "$MNT/app/built-at-build-time.txt"
obdkit umount "$MNT"
rmdir "$MNT"
trap - EXIT
step "done"
