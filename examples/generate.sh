#!/usr/bin/env bash
# Generate with a YAML config; the model comes from $1 (or maxcli's default when empty).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model_args=()
if [ -n "${1:-}" ]; then model_args=(--model "$1"); fi
maxcli generate "${model_args[@]}" --config-file "$here/smollm2.yaml" --section-name quick \
  --prompt "Name three planets of the solar system." --json
