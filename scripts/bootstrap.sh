#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine: system tools (bubblewrap for the local
# executor's namespaces, graphviz for pictures, chromium for the browser tests) and a virtualenv with the
# project and its extras, and the web assets reports vendor.
# Idempotent and quick when nothing changed (a stamp remembers the pyproject.toml it installed).
# It is also CodeBuild's install phase (buildspec.yml), so there is one installer.
#   VENV             the virtualenv (default .venv)
#   EXTRAS           the project's extras (default dev; dev also installs checkov into .venv-checkov)
#   TORCH_INDEX_URL  index torch comes from, e.g. https://download.pytorch.org/whl/cpu for the CPU build
#                    (the default index's Linux wheel is the multi-GB CUDA one); empty: pip's default index
#   CHECKOV          1 (default): with the dev extras, checkov in .venv-checkov; 0: not (its test skips)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
CHECKOV=${CHECKOV:-1}

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
# the dev extras' browser tests (the run report, opened in headless Chromium through Playwright)
if [ "$EXTRAS" = dev ]; then command -v chromium >/dev/null 2>&1 || missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> installing ${missing[*]} (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "==> installing ${missing[*]} (sudo apt)"
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed; the local executor falls back to mapped paths" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  python3 -m venv "$VENV"
fi
if [ "$EXTRAS" = dev ] && [ "$CHECKOV" = 1 ] && [ ! -x .venv-checkov/bin/checkov ]; then
  # checkov pins old boto3/botocore that break the SageMaker SDK: it gets a virtualenv of its own.
  echo "==> installing checkov into .venv-checkov"
  python3 -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install -q --upgrade pip
  .venv-checkov/bin/python -m pip install -q checkov
fi
stamp="$VENV/.mlops-installed-$EXTRAS"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing the project into $VENV (extras: $EXTRAS)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The CPU build of torch first: a range that it satisfies then installs nothing bigger.
  torch_index=()
  if [ -n "$TORCH_INDEX_URL" ]; then
    torch_index=(--index-url "$TORCH_INDEX_URL")
  fi
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q ${torch_index[@]+"${torch_index[@]}"} "torch==2.13.0"
  # A path-based editable install: the default import-hook finder adds ~25 ms to every python start,
  # which every local job pays.
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" -c constraints.txt --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi
# The CSS/JS great-expectations' data docs load from CDNs, pinned in the toolkit's lock, so reports render
# them offline (quick when cached).
"$VENV/bin/python" -m mlops.local.report.web_assets >/dev/null
