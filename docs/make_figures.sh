#!/usr/bin/env bash
# Regenerate the figures of docs/img/ with the project's own commands (the command under each
# figure in the docs is the one here). About 7 minutes on one CPU core (measured 6.5 min):
#   chaosgrad curves logistic (default settings, T up to 160)   ~2.5 min
#   chaosgrad reproduce fig1 fig2 fig4 --quick                   ~4 min (fig1: 3 min)
# With --continual also the continual-learning figures (docs/continual.md), about 16 minutes more:
#   chaosgrad reproduce plasticity forgetting                    ~10 + 6 min
# Usage: bash docs/make_figures.sh [--continual] [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
continual=0
if [[ "${1:-}" == "--continual" ]]; then continual=1; shift; fi
work=${1:-$(mktemp -d)}
export OMP_NUM_THREADS=1

chaosgrad curves logistic --out "$work/curves"
chaosgrad reproduce fig1 fig2 fig4 --quick --out "$work/reproduce"

img=docs/img
mkdir -p "$img"
for kind in horizon truncation cost; do
    cp "$work/curves/figures/curves_logistic_map_$kind.png" "$img/curves_logistic_$kind.png"
done
for fig in fig1_gradient_variance fig2_lr_sweep fig4_lyapunov_vs_growth; do
    cp "$work/reproduce/figures/$fig.png" "$img/$fig.png"
done
if (( continual )); then
    chaosgrad reproduce plasticity forgetting --out "$work/continual"
    for fig in plasticity_online_error forgetting; do
        cp "$work/continual/figures/$fig.png" "$img/$fig.png"
    done
fi
echo "figures copied to $img from $work (captions: $work/*/figures/*.txt)"
