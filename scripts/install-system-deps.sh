#!/usr/bin/env bash
# Installs what the wheels expect from the system and a minimal Debian lacks: libgomp1 (OpenMP,
# for LightGBM) and libnuma1 (NUMA, for vLLM's CPU kernels); with --browser also chromium and
# chromium-driver, the headless browser the UI test drives (the tests need it, running the
# platform does not). Does nothing when they are present; uses sudo when not run as root.
set -euo pipefail
browser=0
[ "${1:-}" = "--browser" ] && browser=1

missing=()
for entry in "libgomp.so.1:libgomp1" "libnuma.so.1:libnuma1"; do
  library="${entry%%:*}" package="${entry##*:}"
  if ! /sbin/ldconfig -p | grep -q "$library"; then
    missing+=("$package")
  fi
done
if [ "$browser" = 1 ]; then
  for entry in "chromium:chromium" "chromedriver:chromium-driver"; do
    program="${entry%%:*}" package="${entry##*:}"
    if ! command -v "$program" >/dev/null; then
      missing+=("$package")
    fi
  done
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "install-system-deps: install ${missing[*]} with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "install-system-deps: installing ${missing[*]}"
$sudo apt-get update -q >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
