# shellcheck shell=bash disable=SC2154 # $root is set by the script that sources this file
# hack/k8s/lib.sh — sourced by hack/k8s/build.sh and hack/kind/k8s.sh (needs $root and
# hack/lib-cache.sh sourced): builds Kubernetes binaries from a wrapper module, cached.

# k8s_build MODULE_DIR NAME VERSION BIN... — builds each BIN (MODULE_DIR/cmd/BIN) at VERSION
# into .cache/tools/NAME-<hash of go.mod, go.sum, the cmd sources and VERSION>, unless all are
# there already; one build at a time per NAME. Prints the directory; progress on stderr.
k8s_build() {
  local here=$1 name=$2 version=$3; shift 3
  local bins=("$@") key out b start tmp vpkg ldflags minor
  key=$( (cd "$here" && cat go.mod go.sum cmd/*/main.go && echo "$version") | sha256sum | cut -c1-16)
  out="$root/.cache/tools/$name-$key"
  k8s_complete() {
    for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
  }
  mkdir -p "$root/.cache/tools"
  if ! k8s_complete; then
    # One build at a time (up.sh may be started twice); wait at most 30 min for the other.
    exec 9>"$root/.cache/tools/$name.lock"
    flock -w 1800 9 || { echo "k8s_build: timed out waiting for another $name build" >&2; return 1; }
    if ! k8s_complete; then
      echo "building ${bins[*]} $version into $out (cold: minutes on 2 cores)" >&2
      start=$(date +%s)
      tmp="$out.tmp"
      rm -rf "$tmp" && mkdir -p "$tmp"
      vpkg=k8s.io/component-base/version
      minor=${version#v1.}; minor=${minor%%.*}
      ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
      ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
      (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$tmp/" "${bins[@]/#/./cmd/}")
      rm -rf "$out" && mv "$tmp" "$out"
      echo "built ${bins[*]} in $(( $(date +%s) - start ))s" >&2
    fi
    exec 9>&-
  fi
  echo "$out"
}
