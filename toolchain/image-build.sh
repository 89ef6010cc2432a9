#!/usr/bin/env bash
# Container images for the local stack, built offline with buildah (no container registry is
# reachable from here):
#
#   toolchain/image-build.sh base
#       the Python base image, sophia.local/python:3.11-bookworm, made once per machine from
#       Debian bookworm packages with mmdebstrap (python3 3.11, venv, ca-certificates); it
#       stands in for python:3.11-slim-bookworm, which CI and prod keep building from.
#   toolchain/image-build.sh mirror REGISTRY
#       the third-party images the stack names (redis, redis_exporter, pgbouncer, postgres),
#       made from Debian bookworm packages and pushed to REGISTRY under the names the pods use
#       (docker.io/library/redis -> REGISTRY/library/redis, ...); the node's containerd resolves
#       docker.io and ghcr.io through REGISTRY only (toolchain/node.sh). Stand-ins, not the
#       upstream builds: Debian has redis 7.0, pgbouncer 1.18, prometheus-redis-exporter 1.45.
#   toolchain/image-build.sh build REPOSITORY TAG CONTEXT DOCKERFILE CONTENT_HASH [ARG=VALUE ...]
#       build DOCKERFILE (with the base image as PYTHON_IMAGE unless an ARG says otherwise),
#       push it to the local registry as REPOSITORY:TAG and REPOSITORY:c-CONTENT_HASH, and
#       print one JSON line: {"digest": "sha256:...", "size": "177 MB", "built": true|false}.
#       An image whose content tag is already in the registry is not rebuilt. Older builds of
#       REPOSITORY are then pruned from buildah's storage (below).
#   toolchain/image-build.sh prune REPOSITORY
#       only that pruning (KEEP_BUILDS, default 3, newest builds kept).
#
# Run by the local image builder (components/image.py, a Pulumi dynamic resource) during
# `pulumi up`; logs go to .state/images/<name>.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BASE_IMAGE="${SOPHIA_BASE_IMAGE:-sophia.local/python:3.11-bookworm}"
MIRROR="${SOPHIA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SOPHIA_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
LOGDIR="$ROOT/.state/images"
mkdir -p "$LOGDIR"

log() { echo "[images] $*" >&2; }

cmd_base() {
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "$BASE_IMAGE"
    return 0
  fi
  # One base build at a time (the builder runs several images in parallel).
  exec 8>"$LOGDIR/.base.lock"
  flock 8
  if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    local t0=$SECONDS tar="$LOGDIR/base-rootfs.tar" c
    log "building $BASE_IMAGE from Debian bookworm packages (mmdebstrap; log $LOGDIR/base.log)"
    nice -n 10 mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$tar" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
      "deb $SECURITY bookworm-security main" >"$LOGDIR/base.log" 2>&1
    c="$(buildah from scratch)"
    buildah add "$c" "$tar" / >>"$LOGDIR/base.log"
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --cmd python3 "$c"
    buildah commit --rm "$c" "$BASE_IMAGE" >>"$LOGDIR/base.log"
    rm -f "$tar"
    log "$BASE_IMAGE built in $((SECONDS - t0))s ($(image_size "$BASE_IMAGE"))"
  fi
  echo "$BASE_IMAGE"
}

# Name the pod asks for -> entrypoint in the Debian data image. Keep in step with the
# components' defaults (components/redis.py, components/pgbouncer.py).
MIRRORED=(
  "library/redis:8.2.2-bookworm|/usr/bin/redis-server"
  "oliver006/redis_exporter:v1.77.0|/usr/bin/prometheus-redis-exporter"
  "cloudnative-pg/pgbouncer:1.24.1|/usr/sbin/pgbouncer"
  "library/postgres:15-bookworm|/usr/lib/postgresql/15/bin/postgres"
)

cmd_mirror() {
  local registry="$1" item name entry c recipe
  # What the stand-ins are made of (this function and the list): a change makes new ones, under
  # a new data image and a new marker tag, so machines with the old ones rebuild and re-push.
  recipe="$(
    {
      declare -f cmd_mirror
      printf '%s\n' "${MIRRORED[@]}"
    } | sha256sum | cut -c1-12
  )"
  local DATA_IMAGE="sophia.local/data:bookworm-$recipe"
  if ! buildah inspect --type image "$DATA_IMAGE" >/dev/null 2>&1; then
    local t0=$SECONDS tar="$LOGDIR/data-rootfs.tar"
    log "building $DATA_IMAGE from Debian bookworm packages (log $LOGDIR/data.log)"
    nice -n 10 mmdebstrap --variant=minbase \
      --include=redis-server,pgbouncer,postgresql-15,prometheus-redis-exporter,ca-certificates \
      --aptopt='Acquire::Languages "none"' \
      --customize-hook='echo "sophia:x:10001:10001:pods run as 10001 (components/workload.py):/tmp:/usr/sbin/nologin" >>"$1/etc/passwd"' \
      --customize-hook='echo "sophia:x:10001:" >>"$1/etc/group"' \
      --customize-hook='rm -rf "$1"/etc/redis/* && chmod 0755 "$1"/etc/redis' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$tar" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
      "deb $SECURITY bookworm-security main" >"$LOGDIR/data.log" 2>&1
    c="$(buildah from scratch)"
    buildah add "$c" "$tar" / >>"$LOGDIR/data.log"
    buildah config --env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 "$c"
    buildah commit --rm "$c" "$DATA_IMAGE" >>"$LOGDIR/data.log"
    rm -f "$tar"
    log "$DATA_IMAGE built in $((SECONDS - t0))s ($(image_size "$DATA_IMAGE"))"
  fi
  for item in "${MIRRORED[@]}"; do
    name="${item%%|*}" entry="${item#*|}"
    if [ -n "$(registry_digest "$registry/${name%%:*}" "sophia-$recipe" || true)" ]; then
      continue
    fi
    c="$(buildah from --pull-never "$DATA_IMAGE")"
    buildah config --entrypoint "[\"$entry\"]" --cmd '' "$c"
    buildah commit --rm "$c" "$registry/$name" >>"$LOGDIR/data.log"
    buildah push --tls-verify=false "$registry/$name" "docker://$registry/$name" >>"$LOGDIR/data.log" 2>&1
    buildah push --tls-verify=false "$registry/$name" "docker://$registry/${name%%:*}:sophia-$recipe" >>"$LOGDIR/data.log" 2>&1
    log "mirrored $name ($entry from Debian) into $registry"
  done
}

# The image's size as buildah reports it (uncompressed, e.g. "177 MB").
image_size() {
  local size
  size="$(buildah images --noheading --format '{{.Size}}' "$1" 2>/dev/null || true)"
  echo "${size%%$'\n'*}" | grep . || echo "?"
}

# registry_digest REPOSITORY TAG: the manifest digest of REPOSITORY:TAG in the registry, if any.
registry_digest() {
  local host="${1%%/*}" path="${1#*/}"
  curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$host/v2/$path/manifests/$2" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'
}

cmd_build() {
  local repo="$1" tag="$2" context="$3" dockerfile="$4" hash="$5"; shift 5
  local name="${repo##*/}" digest t0=$SECONDS args=() have_base=0 a
  for a in "$@"; do
    args+=(--build-arg "$a")
    [[ "$a" == PYTHON_IMAGE=* ]] && have_base=1
  done
  digest="$(registry_digest "$repo" "c-$hash" || true)"
  if [ -n "$digest" ]; then
    log "$name: unchanged (content $hash), $repo@$digest"
    printf '{"digest": "%s", "size": "%s", "built": false}\n' "$digest" "$(image_size "$repo:c-$hash")"
    return 0
  fi
  [ "$have_base" = 1 ] || args+=(--build-arg "PYTHON_IMAGE=$(cmd_base)")
  # One build at a time: `pulumi up` asks for every image at once, and on two cores parallel pip
  # installs only thrash. The lock is released when this process exits.
  exec 7>"$LOGDIR/.build.lock"
  flock 7
  log "$name: building $dockerfile (log $LOGDIR/$name.log)"
  # Isolation chroot + the host network: RUN steps (pip install from PyPI) need no CNI, and the
  # runc/cgroup setup of this machine does not matter to them.
  # This machine reaches PyPI through a TLS proxy whose CA only the host trusts: RUN steps see
  # the host's CA bundle (and pip.conf, if any) through read-only mounts, never baked in.
  local mounts=(-v "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro")
  [ -f /etc/pip.conf ] && mounts+=(-v "/etc/pip.conf:/etc/pip.conf:ro")
  nice -n 10 buildah bud --layers --pull-never --isolation chroot --network host "${mounts[@]}" \
    --ignorefile "$HERE/images.dockerignore" -f "$dockerfile" -t "$repo:$tag" -t "$repo:c-$hash" \
    "${args[@]}" "$context" >"$LOGDIR/$name.log" 2>&1 || { tail -n 20 "$LOGDIR/$name.log" >&2; return 1; }
  local dfile="$LOGDIR/$name.digest"
  buildah push --tls-verify=false --digestfile "$dfile" "$repo:c-$hash" "docker://$repo:c-$hash" >>"$LOGDIR/$name.log" 2>&1
  buildah push --tls-verify=false "$repo:$tag" "docker://$repo:$tag" >>"$LOGDIR/$name.log" 2>&1
  digest="$(cat "$dfile")"
  log "$name: built and pushed in $((SECONDS - t0))s, $(image_size "$repo:$tag"), $repo@$digest"
  printf '{"digest": "%s", "size": "%s", "built": true}\n' "$digest" "$(image_size "$repo:$tag")"
  prune_older "$repo"
}

# prune_older REPOSITORY: untag all but the newest KEEP_BUILDS builds of REPOSITORY in buildah's
# storage, and drop the layer images nothing uses any more. The registry holds what the pods pull;
# the build storage is only a layer cache, and every chassis change added a few hundred MB to it
# for good. A few are kept so branches switched back and forth still find their layers. Untagging
# (not `rmi -f`) never touches a build in progress elsewhere: an image in use stays.
prune_older() {
  local keep="${KEEP_BUILDS:-3}" names
  names="$(buildah images --noheading --format '{{.CreatedAtRaw}}|{{.ID}}|{{.Name}}:{{.Tag}}' --filter "reference=$1" |
    sort -r | awk -F'|' -v keep="$keep" '!($2 in rank) { rank[$2] = ++n } rank[$2] > keep { print $3 }')"
  [ -n "$names" ] || return 0
  # shellcheck disable=SC2086  # one name per word
  buildah rmi $names >/dev/null 2>&1 || true
  buildah rmi --prune >/dev/null 2>&1 || true
}

case "${1:-}" in
  base) cmd_base ;;
  mirror) shift; cmd_mirror "$@" ;;
  build) shift; cmd_build "$@" ;;
  prune) prune_older "$2" ;;
  *) echo "usage: $0 base | build REPOSITORY TAG CONTEXT DOCKERFILE CONTENT_HASH [ARG=VALUE ...] | prune REPOSITORY" >&2; exit 2 ;;
esac
