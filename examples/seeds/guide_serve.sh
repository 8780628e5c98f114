#!/usr/bin/env bash
# MAX model-pipeline guide, "Load custom architectures": `max` -> `maxcli`; the weights path is the one
# edit (a local checkpoint folder whose config.json names MyModelForCausalLM, passed first, any further serve flags after it; run from
# examples/seeds so that ./my_model is the guide's folder).
maxcli serve --custom-architectures ./my_model --model "$@"
