#!/usr/bin/env bash
# Generates the Go stubs of proto/ with Debian's protoc, protoc-gen-go and
# protoc-gen-go-grpc (offline) into the GOPATH GOPATH_DIR (default
# $BUILD_DIR/go, git-ignored), and links the hand-written packages
# client/go/reflexion, client/go/agent (with agent/kubefake) and client/go/cmd
# into it. Prints GOPATH_DIR. Build and test with
#   GO111MODULE=off GOPATH=GOPATH_DIR:/usr/share/gocode go test \
#     github.com/reflexion-dev/reflexion/client/go/reflexion
# (the go tool does not follow symlinks for "..." patterns: name each
# package, as go_client_test in scripts/lib.sh does).
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"

gopath=${1:-$BUILD_DIR/go}
mkdir -p "$gopath"
gopath=$(cd "$gopath" && pwd)
module=github.com/reflexion-dev/reflexion
src=$gopath/src/$module/client/go
# Fresh stubs every time: a removed message must not linger.
rm -rf "$src/reflexionv1" "$src/healthv1"
mkdir -p "$src"
# --go_out without paths=source_relative places each file under its
# go_package import path, i.e. $gopath/src/<import path>/.
protoc -I "$REPO_ROOT/proto" -I /usr/include \
  --go_out="$gopath/src" --go-grpc_out="$gopath/src" \
  "$REPO_ROOT/proto/reflexion/v1/types.proto" \
  "$REPO_ROOT/proto/reflexion/v1/reflexion.proto" \
  "$REPO_ROOT/proto/grpc/health/v1/health.proto"
for dir in reflexion agent cmd; do
  ln -sfn "$REPO_ROOT/client/go/$dir" "$src/$dir"
done
echo "$gopath"
