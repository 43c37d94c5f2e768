#!/usr/bin/env bash
# The browser tests' system packages: Debian's Chromium and the CJK fonts (Chinese pages).
# Quick when both are there (no apt-get run); installs them with apt-get when missing and
# running as root; otherwise says what to install and fails.
set -euo pipefail

CJK_FONT_DIR=/usr/share/fonts/opentype/noto
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "$CJK_FONT_DIR/NotoSansCJK-*.ttc" >/dev/null || missing+=(fonts-noto-cjk)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "slotline: the browser tests need these Debian packages: ${missing[*]}" >&2
    echo "slotline: install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "slotline: installing ${missing[*]} (apt-get, browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "slotline: chromium did not install" >&2; exit 1; }
compgen -G "$CJK_FONT_DIR/NotoSansCJK-*.ttc" >/dev/null \
    || { echo "slotline: fonts-noto-cjk did not install" >&2; exit 1; }
