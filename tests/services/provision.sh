#!/usr/bin/env bash
# Provision the real services mlpack's integration tests use, idempotently (see shared DESIGN.md, "Verified").
#   - apt packages: docker.io, docker-registry, qemu-user-static, skopeo, umoci, gpgv, openssh-server,
#     docker-compose (Debian's 1.29: `docker-compose config` validates generated Compose files), wrk (the load
#     generator of bench/serving.py and bench/overload.py, run by tests/test_benchmarks_page.py), iproute2 (the
#     fleet tests' simulated devices bring up the loopback of their own network namespaces), nghttp2-client (h2load:
#     the C client of bench/grpc_vs_http.py, HTTP/1.1 and HTTP/2 alike), nodejs (grpc-js, gRPC's Node.js client, in
#     tests/runtime/test_grpc_node.py; npm installs it)
#   - the Docker engine, started in the background when its socket is absent
#   - a single-node Docker Swarm on that engine (loopback), when it is in none
#   - qemu-aarch64 registered with binfmt_misc (flag F, so it works inside containers)
#   - the AWS Lambda Runtime Interface Emulator, unpacked from the aws-sam-cli wheel into the cache
# Safe to run again: every step checks before it acts. Needs root (apt, dockerd, binfmt_misc).
set -euo pipefail

log() { printf 'provision: %s\n' "$*" >&2; }
cache="${MLPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlpack}"
mkdir -p "$cache"

# --- apt packages -------------------------------------------------------------------------------------------
pkgs=(docker.io docker-registry qemu-user-static skopeo umoci gpgv debian-archive-keyring openssh-server
      openssh-client busybox-static docker-compose wrk iproute2 nghttp2-client nodejs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Docker engine ------------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  # The registry mirror list stays whatever the machine's /etc/docker/daemon.json says; no hub is reachable here.
  (setsid dockerd >"$cache/dockerd.log" 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see $cache/dockerd.log"; exit 1; }
fi

# --- Docker Swarm -------------------------------------------------------------------------------------------
# A single-node swarm on the shared engine for the Swarm tests (tests/deliver/test_swarm.py), on loopback only. It
# stays on: the tests remove what they create (stacks, node labels), and nothing else depends on swarm mode being
# off (`docker swarm leave --force` turns it off).
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ]; then
  log "initializing a single-node swarm (docker swarm init, loopback)"
  docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
fi

# --- arm64 emulation ----------------------------------------------------------------------------------------
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  log "registering qemu-aarch64 with binfmt_misc"
  grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | grep -v '^$' | head -n1 >"$binfmt/register"
fi

# --- Lambda Runtime Interface Emulator ------------------------------------------------------------------------
rie="$cache/rie"
if [ ! -x "$rie/aws-lambda-rie-x86_64" ] || [ ! -x "$rie/aws-lambda-rie-arm64" ]; then
  log "unpacking the Lambda Runtime Interface Emulator from the aws-sam-cli wheel"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" aws-sam-cli
  mkdir -p "$rie.tmp"
  python3 - "$tmp" "$rie.tmp" <<'PY'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("aws_sam_cli-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    for arch in ("x86_64", "arm64"):
        name = f"samcli/local/rapid/aws-lambda-rie-{arch}"
        out = dst / f"aws-lambda-rie-{arch}"
        out.write_bytes(zf.read(name))
        out.chmod(0o755)
PY
  rm -rf "$rie" && mv "$rie.tmp" "$rie"
  rm -rf "$tmp"
fi
log "ok (cache: $cache)"
