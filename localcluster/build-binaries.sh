#!/usr/bin/env bash
# Build the local control plane's binaries from Go modules, once, into a cache outside the repository.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kubelet, kube-proxy (the real node, localcluster/node.py)         <- k8s.io/kubernetes
#   etcd                                                              <- go.etcd.io/etcd/server/v3
#   kwok                                                              <- sigs.k8s.io/kwok
#   helm                                                              <- helm.sh/helm/v3
#   crictl (the real node's teardown and debugging)                   <- sigs.k8s.io/cri-tools
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module k8s.io/<name> with a local
# directory. We generate a wrapper module that replaces each of them (the list is read from that version's own go.mod)
# with the published v0.<minor>.<patch>, and build the commands as tools of the wrapper.
#
# Idempotent: a component is skipped when its binary reports the pinned version (a stamp file per component).
# Usage: build-binaries.sh [BIN_DIR]   (prints BIN_DIR on the last line)
set -euo pipefail

K8S_VERSION="${AITBC_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${AITBC_ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${AITBC_KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${AITBC_HELM_VERSION:-v3.19.0}"
CRICTL_VERSION="${AITBC_CRICTL_VERSION:-v1.34.0}"

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/aitbc-operator"
BIN_DIR="${1:-$CACHE_ROOT/k8s-$K8S_VERSION/bin}"
WORK="$CACHE_ROOT/build"
mkdir -p "$BIN_DIR" "$WORK"

export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

log() { printf '[build-binaries] %s\n' "$*" >&2; }

# stamp NAME VERSION -> true when NAME was already built at VERSION
built() { [[ -x "$BIN_DIR/$1" && -f "$BIN_DIR/.$1.version" && "$(cat "$BIN_DIR/.$1.version")" == "$2" ]]; }
stamp() { printf '%s' "$2" > "$BIN_DIR/.$1.version"; }

# wrapper NAME: a fresh module directory under the build cache
wrapper() {
  local dir="$WORK/$1"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init "aitbc.local/build/$1" >/dev/null 2>&1
}

build_kubernetes() {
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) need=0 c
  for c in "${cmds[@]}"; do built "$c" "$K8S_VERSION" || need=1; done
  if (( ! need )); then log "kubernetes $K8S_VERSION: cached"; return; fi
  log "kubernetes $K8S_VERSION: building ${cmds[*]} (slow the first time)"
  wrapper "kubernetes-$K8S_VERSION"
  local staging="v0.${K8S_VERSION#v1.}"
  # The staging modules, from that version's own go.mod.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local mods
  mods="$(grep -Eo '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u)"
  [[ -n "$mods" ]] || { log "no staging replaces found in $gomod"; exit 1; }
  local m
  for m in $mods; do go mod edit -replace "$m=$m@$staging"; done
  local pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  go get -tool "${pkgs[@]/%/@$K8S_VERSION}" >&2
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  go build -ldflags "$ld" -o "$BIN_DIR/" "${pkgs[@]}" >&2
  for c in "${cmds[@]}"; do stamp "$c" "$K8S_VERSION"; done
}

build_tool() { # NAME MODULE-PATH PACKAGE STAMP [LDFLAGS] [MODULE-VERSION (default: STAMP)]
  local name="$1" module="$2" pkg="$3" version="$4" ld="${5:-}" modversion="${6:-$4}"
  if built "$name" "$version"; then log "$name $version: cached"; return; fi
  log "$name $version: building"
  wrapper "$name-$modversion"
  go get -tool "$pkg@$modversion" >&2
  go build -ldflags "-s -w $ld" -o "$BIN_DIR/$name" "$pkg" >&2
  stamp "$name" "$version"
  : "$module"
}

# kwok simulates nothing without Stage objects: write its own "fast" stages (node initialize, node heartbeat with
# lease, pod ready/complete/delete) from the kwok module of the pinned version into one config file.
kwok_stages() {
  local out="$BIN_DIR/kwok-stages.yaml" stampfile="$BIN_DIR/.kwok-stages.version"
  if [[ -f "$out" && -f "$stampfile" && "$(cat "$stampfile")" == "$KWOK_VERSION" ]]; then
    log "kwok stages $KWOK_VERSION: cached"; return
  fi
  local dir f
  dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  : > "$out.tmp"
  for f in "$dir"/kustomize/stage/node/fast/node-*.yaml "$dir"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
           "$dir"/kustomize/stage/pod/fast/pod-*.yaml; do
    printf -- '---\n# sigs.k8s.io/kwok@%s/%s\n' "$KWOK_VERSION" "${f#"$dir"/}" >> "$out.tmp"
    cat "$f" >> "$out.tmp"
  done
  grep -q 'kind: Stage' "$out.tmp" || { log "no kwok stages found under $dir/kustomize/stage"; exit 1; }
  mv "$out.tmp" "$out"
  printf '%s' "$KWOK_VERSION" > "$stampfile"
  log "kwok stages $KWOK_VERSION: written"
}

build_kubernetes
build_tool etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
build_tool kwok sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
# helm renders offline (`helm template`) for the Kubernetes version compiled into it (v1.20 unless told): give it the
# pinned one, as helm's own Makefile does from its client-go, so `kubeVersion: >=1.29` charts render without flags.
K8S_MINOR="${K8S_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
helm_ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$K8S_MINOR"
done
build_tool helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm "$HELM_VERSION+k8s-1.$K8S_MINOR" "$helm_ld" "$HELM_VERSION"
build_tool crictl sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" \
  "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
kwok_stages
echo "$BIN_DIR"
