# Shared by scripts/test and scripts/demo: install what is missing, build.
# Source it; do not run it.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO_ROOT/build}
# The clang tree: ASan + UBSan, -Wthread-safety, libFuzzer targets.
SAN_BUILD_DIR=${SAN_BUILD_DIR:-$REPO_ROOT/build-san}
FUZZ_TARGETS=(config_fuzz scenario_fuzz incident_fuzz redact_fuzz)
BUF_VERSION=1.75.0

# Debian 12 packages the build and the tests need.
DEBIAN_PACKAGES=(
  build-essential cmake pkg-config
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libgrpc++-dev libgrpc-dev
  libabsl-dev libgoogle-glog-dev libgflags-dev
  librocksdb-dev libcurl4-openssl-dev
  # OpenSSL: libcrypto hashes tokens; the openssl CLI makes test certificates.
  libssl-dev openssl
  libyaml-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev
  # The Go client (client/go, GOPATH mode, offline). grpc's dependency is
  # satisfied by golang-github-golang-protobuf-1-3-dev unless 1-5 is named:
  # 1-3 panics on the first oneof Send.
  golang-go protoc-gen-go protoc-gen-go-grpc
  golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev
)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
      missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# buf (npm @bufbuild/buf) for `buf lint` and `buf curl`, installed into the
# repo's .cache (git-ignored). Prints its path.
ensure_buf() {
  local dir=$REPO_ROOT/.cache/buf
  local bin=$dir/node_modules/.bin/buf
  if [[ ! -x $bin ]] || [[ $("$bin" --version 2>/dev/null) != "$BUF_VERSION" ]]; then
    if ! command -v npm >/dev/null; then
      log "installing nodejs and npm"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    log "installing @bufbuild/buf@$BUF_VERSION (npm)"
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund --no-save \
      "@bufbuild/buf@$BUF_VERSION" >/dev/null)
  fi
  echo "$bin"
}

# go_client_test: generates the Go stubs into the GOPATH $BUILD_DIR/go
# (client/go/generate.sh), checks gofmt, runs go vet and go test of
# client/go/reflexion, client/go/agent and client/go/agent/kubefake in GOPATH
# mode, offline, against the built $BUILD_DIR/server/reflexion-server, and
# builds the binaries of client/go/cmd into $BUILD_DIR/go/bin. Packages are
# named one by one: "..." patterns do not follow the GOPATH's symlinks.
go_client_test() {
  local server=$BUILD_DIR/server/reflexion-server
  local base=github.com/reflexion-dev/reflexion/client/go
  local pkgs=("$base/reflexion" "$base/agent" "$base/agent/kubefake")
  local cmds=("$base/cmd/reflexion-agent" "$base/cmd/kube-fake")
  [[ -x $server ]] || { log "no $server: build it first"; return 1; }
  local unformatted
  unformatted=$(gofmt -l "$REPO_ROOT/client/go")
  [[ -z $unformatted ]] || { log "not gofmt-ed: $unformatted"; return 1; }
  local gopath
  gopath=$("$REPO_ROOT/client/go/generate.sh" "$BUILD_DIR/go")
  (
    export GO111MODULE=off GOPATH=$gopath:/usr/share/gocode GOPROXY=off GOFLAGS= \
      GOCACHE=$BUILD_DIR/go-cache REFLEXION_SERVER=$server \
      REFLEXION_CTL=$BUILD_DIR/client/reflexionctl
    go vet "${pkgs[@]}" "${cmds[@]}"
    go test -count=1 -v "${pkgs[@]}"
    go build -o "$gopath/bin/" "${cmds[@]}"
  )
}

# go_build_binaries: generates the stubs and builds reflexion-agent and
# kube-fake into $BUILD_DIR/go/bin (offline, GOPATH mode).
go_build_binaries() {
  local base=github.com/reflexion-dev/reflexion/client/go
  local gopath
  gopath=$("$REPO_ROOT/client/go/generate.sh" "$BUILD_DIR/go")
  (
    export GO111MODULE=off GOPATH=$gopath:/usr/share/gocode GOPROXY=off GOFLAGS= \
      GOCACHE=$BUILD_DIR/go-cache
    go build -o "$gopath/bin/" "$base/cmd/reflexion-agent" "$base/cmd/kube-fake"
  )
}

# build [target...]: configure (Release) and build with -j2.
build() {
  local buf=${BUF:-}
  log "configuring (Release) in $BUILD_DIR"
  cmake -S "$REPO_ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
    -DREFLEXION_BUF="$buf" >/dev/null
  log "building ${*:-everything} (-j2)"
  if (($#)); then
    local targets=()
    for t in "$@"; do targets+=(--target "$t"); done
    cmake --build "$BUILD_DIR" -j2 "${targets[@]}"
  else
    cmake --build "$BUILD_DIR" -j2
  fi
}

# build_sanitized [target...]: configure and build the clang tree
# ($SAN_BUILD_DIR) with -j2: ASan + UBSan on every target, -Wthread-safety
# and -Werror on ours, the libFuzzer targets, no benchmarks. -O1 -g without
# NDEBUG, so DCHECKs and asserts are live too.
build_sanitized() {
  log "configuring (clang, ASan + UBSan, fuzz targets) in $SAN_BUILD_DIR"
  cmake -S "$REPO_ROOT" -B "$SAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DREFLEXION_SANITIZE=ON -DREFLEXION_FUZZ=ON -DREFLEXION_BUILD_BENCH=OFF \
    -DREFLEXION_BUF="${BUF:-}" >/dev/null
  log "building (sanitized) ${*:-everything} (-j2)"
  if (($#)); then
    local targets=()
    for t in "$@"; do targets+=(--target "$t"); done
    cmake --build "$SAN_BUILD_DIR" -j2 "${targets[@]}"
  else
    cmake --build "$SAN_BUILD_DIR" -j2
  fi
}

# run_fuzzer TARGET WORK_CORPUS [libFuzzer flags...]: runs a fuzz target of
# the clang tree on WORK_CORPUS (created; new inputs are written there) and
# the checked-in seeds tests/fuzz/corpus/TARGET (read only), seed 1.
# Fails, naming the saved input, when the target crashes.
run_fuzzer() {
  local target=$1 work=$2
  shift 2
  local artifacts=$SAN_BUILD_DIR/fuzz/artifacts
  mkdir -p "$work" "$artifacts"
  log "fuzzing $target $*"
  "$SAN_BUILD_DIR/tests/fuzz/$target" -seed=1 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$target-" "$@" \
    "$work" "$REPO_ROOT/tests/fuzz/corpus/$target" ||
    { log "$target FAILED: input saved under $artifacts/$target-*"; return 1; }
}
