#!/usr/bin/env bash
# The GPU checks and benchmarks, in one go, on a machine with a CUDA GPU (cupy installed).
# Usage: bash benchmarks/gpu_session.sh [STAGE ...]
#   stages: tests ranks pd14 launches bandwidth assimilation wholebrain (default: all)
# Results: benchmarks/results/*.json as every benchmark writes them; logs in $LOGS (default benchmarks/out).
# The ranks stage needs an mpiexec of the MPI that mpi4py loads (pip's mpich: where another MPI is
# installed too, point MPI4PY_LIBMPI at mpich's libmpi.so.12).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOGS=${LOGS:-benchmarks/out}
mkdir -p "$LOGS"
work=$(mktemp -d)
stages=${*:-tests ranks pd14 launches bandwidth assimilation wholebrain}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import cupy, numba, numpy, mpi4py; print('cupy', cupy.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'mpi4py', mpi4py.__version__)"
for stage in $stages; do
  echo "=== $stage $(date +%T)"
  case $stage in
    tests)  # every kernel against the CPU's, whole small networks GPU vs CPU, determinism
      $PY -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$LOGS/gpu_tests.log" ;;
    ranks)  # the same seed gives the same spikes on 1 and 2 ranks sharing the GPU
      args=(--quiet --backend gpu --set wholebrain.n_neurons=200000 --set simulation.t_ms=500 --overwrite)
      $PY -m dtb run "${args[@]}" --out "$work/r1.h5" &&
      mpiexec -n 2 $PY -m mpi4py -m dtb run "${args[@]}" --out "$work/r2.h5" &&
      $PY - "$work/r1.h5" "$work/r2.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p) for p in sys.argv[1:])
g = "spikes/wholebrain/"
for k in ("timestamps", "node_ids"):
    np.testing.assert_array_equal(a[g + k][()], b[g + k][()])
print("1 rank == 2 ranks on the GPU:", a[g + "node_ids"].shape[0], "spikes, bitwise")
PYEOF
      ;;
    pd14)
      $PY benchmarks/pd14.py --backend gpu --seeds 1 --t-ms 10000 --discard-ms 500 2>&1 | tee "$LOGS/pd14_gpu.log" ;;
    launches)  # one launch per kernel: the time split between delivery and update
      $PY benchmarks/pd14.py --backend gpu --no-graphs --seeds 1 --t-ms 2000 --discard-ms 500 2>&1 | tee "$LOGS/pd14_gpu_launches.log" ;;
    assimilation)  # the assimilation benchmark's first subject on the GPU
      $PY benchmarks/assimilation.py --subjects 101309 --tag gpu --set simulation.backend=gpu 2>&1 | tee "$LOGS/assimilation_gpu.log" ;;
    bandwidth)
      $PY benchmarks/gpu_bandwidth.py --neurons 2000000 --in-degree 200 2>&1 | tee "$LOGS/gpu_bandwidth.log" ;;
    wholebrain)
      $PY benchmarks/wholebrain_sizes.py --backend gpu --sizes ${WB_SIZES:-1000000 4000000 10000000} \
        --t-ms ${WB_T_MS:-1000 500 200} --in-degree ${WB_K:-500} 2>&1 | tee "$LOGS/wholebrain_gpu.log" ;;
  esac
done
