#!/usr/bin/env bash
# Builds the ringchat image with podman where no image can be pulled: a minimal base image is
# made from this host's own files (a shell, the few tools the Dockerfile's RUN uses, and the
# shared libraries that they and the binary need), then deploy/Dockerfile's `prebuilt` target
# is built on it with the given binary.
#
#   deploy/build-local-image.sh BINARY IMAGE_TAG      e.g. target/release/ringchat localhost/ringchat:local
#
# Needs root, podman and runc (docs/operations.md, "What could not be run here").
set -euo pipefail
binary="$(realpath "$1")"
tag="$2"
base_tag="${tag%:*}-base:${tag##*:}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

root="$work/rootfs"
mkdir -p "$root"/{bin,etc,tmp,usr/local/bin,var/lib}
chmod 1777 "$root/tmp"
copy_with_libs() {
  local file="$1"
  mkdir -p "$root$(dirname "$file")"
  cp -L "$file" "$root$file"
  # ldd prints `name => /path (addr)` and the loader as `/path (addr)`.
  ldd "$file" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -Ln "$lib" "$root$lib"
  done
}
for tool in sh bash mkdir chown cat; do
  copy_with_libs "$(command -v "$tool")"
done
# The binary's libraries belong in the base (the binary itself comes in the image build).
ldd "$binary" | grep -oE '/[^ ]+' | while read -r lib; do
  [ -e "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -Ln "$lib" "$root$lib"
done
# Debian's merged /usr: /bin/sh is what RUN and the scripts' shebangs call.
for tool in sh bash mkdir chown cat; do
  [ -e "$root/bin/$tool" ] || ln -s "$(command -v "$tool")" "$root/bin/$tool"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
tar -C "$root" -cf "$work/rootfs.tar" .
podman import "$work/rootfs.tar" "$base_tag" >/dev/null

context="$work/context"
mkdir -p "$context/deploy"
cp "$repo/deploy/Dockerfile" "$repo/deploy/healthcheck.sh" "$repo/deploy/statefulset-entrypoint.sh" "$context/deploy/"
cp "$binary" "$context/ringchat"
# --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
podman build --runtime runc --format docker --target prebuilt \
  --build-arg BASE="$base_tag" --build-arg BINARY=ringchat \
  -f "$context/deploy/Dockerfile" -t "$tag" "$context" >&2
echo "$tag (base $base_tag)"
