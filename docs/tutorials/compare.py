"""Tutorial: compare optimizers on your system, on equal compute.

Every method (gradient estimators stepping Adam, and ask/tell strategies such as CMA-ES) gets the
same budget of simulated steps on the learned-optimizer toy of Metz et al. (2021), in its chaotic
regime; the learning curves go to a results store and figures. The command line does the same:

    chaosgrad compare metz --methods bptt pes cmaes --quick --out results/compare

Run it with ``python docs/tutorials/compare.py [OUT]`` (about 20 s on one CPU core with this
tiny budget); the page docs/tutorials/compare.md walks through it.
"""
import sys
import tempfile

from experiments import train


def main(out: str) -> None:
    # --8<-- [start:compare]
    cfg = train.Config(system="metz_sgd_momentum", regime="chaotic",
                       methods=("bptt", "pes", "cmaes"),     # estimators and strategies alike
                       budget=6_000,       # simulated trajectory-steps per (method, seed)
                       seeds=2, checkpoints=4, eval_episodes=32, lr=0.05)
    results = train.run(cfg, out, progress=False)    # resumable: finished curves are reused
    figures = train.plot(results, out)               # OUT/figures/compare_<system>_{steps,time}.png
    for method, s in results["summary"].items():
        print(f"{method:6s} L(theta): start {s['median'][0]:.4f} -> final {s['median'][-1]:.4f} "
              f"(median of {s['seeds']} seeds, {s['steps'][-1]:.0f} steps)")
    print("figures:", *figures)
    # --8<-- [end:compare]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
