#!/usr/bin/env bash
# The GPU check, in one go of a few minutes on a machine with an NVIDIA GPU and a PyTorch CUDA
# image (no package registry needed): the `gpu`-marked tests, then benchmarks/gpu_runtimes.py (the
# sentence-embeddings and digits examples as PyTorch FP32 / FP16 / BF16 / torch.compile candidates
# on CUDA, with energy from NVML). Everything it writes is flat under OUT (default ./gpu-check):
# machine.txt, gpu-tests.log, figures.md and each run's report.json / report.md.
#   scripts/gpu-carry                 # here, where PyPI is reachable: .gpu-carry/ (wheels, MiniLM)
#   benchmarks/gpu_check.sh [OUT]     # there, from the repository root, .gpu-carry beside it
# It installs nothing from a registry: the carried wheels, where the image lacks them, go into a
# private folder on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
mkdir -p "$out"
python=${PYTHON:-python3}
site=$(mktemp -d)
if ! "$python" -c "import pydantic" 2>/dev/null && compgen -G ".gpu-carry/wheels/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu-carry/wheels/*.whl \
        || { echo "the carried wheels do not install on $("$python" --version)"; exit 1; }
fi
export PYTHONPATH="$site:$PWD/jobs:$PWD/operator:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{ nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv 2>&1
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
  for module in tensorrt onnxruntime torchao pynvml; do
      "$python" -c "import $module as m; print('$module', getattr(m, '__version__', 'present'))" 2>/dev/null || echo "$module absent"
  done
  "$python" -c "import onnxruntime as o; print('onnxruntime providers', o.get_available_providers())" 2>/dev/null
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
status=0
"$python" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_gpu_runtimes.py tests/test_tensorrt.py 2>&1 | tee "$out/gpu-tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
minilm=.gpu-carry/minilm
[ -d "$minilm" ] || minilm=examples/models/all-MiniLM-L6-v2
# shellcheck disable=SC2086  # GPU_CHECK_ARGS: more options for gpu_runtimes.py (e.g. --rounds 3)
"$python" benchmarks/gpu_runtimes.py --out "$out" --minilm "$minilm" ${GPU_CHECK_ARGS:-} || status=1
exit $status
