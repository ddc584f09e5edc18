"""Does pnp's data step need its warm start from the denoised image z? CG work and NRMSE per start and tolerance.

    OMP_NUM_THREADS=1 python docs/experiments/pnp_cg/eval_cg.py START [CG_TOL CG_ITERS] > LOG

START: "z" (the shipped start of every data step: the denoised image), "previous" (the previous level's x) or
"correction" (z plus the previous level's data correction x − z, which keeps z's null-space component). The pnp
sampler of dpm_core (its source, with only the start of the CG call changed) runs on the production path's inputs
(case_inputs: maps, noise level, SENSE start, the L1 phase reference) of the real slice at R 4 and R 6, with the
default model of the pnp experiments (the FLAIR model), at ζ 1/16 and 1/4; it logs the CG normal-operator
applications of the 30 data steps and the NRMSE (bench_real.py's).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "experiments" / "pnp_zeta"))
from bench_real import scores  # noqa: E402
from case_inputs import case_inputs, pnp_experiment  # noqa: E402

import dpm_core.samplers.registry as registry  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.samplers import posterior_samples  # noqa: E402

pnp_module = importlib.import_module("dpm_core.samplers.pnp")   # the package re-exports the function by that name
SHIPPED_STEP = "x = conjugate_gradient(lambda u: op.normal(u) + mu * u, Ahy + mu * z, z, cg_iters, tol=cg_tol)"
STEPS = {
    "z": SHIPPED_STEP,
    "previous": SHIPPED_STEP.replace("Ahy + mu * z, z,", "Ahy + mu * z, x,"),
    "correction": ("start = z if i == 0 else z + correction\n"
                   "            x = conjugate_gradient(lambda u: op.normal(u) + mu * u, Ahy + mu * z, start, cg_iters, "
                   "tol=cg_tol)\n"
                   "            correction = x - z"),
}


def counted_pnp(start: str):
    """pnp with the data step's CG start replaced and its normal-operator applications counted into ``calls``."""
    source = inspect.getsource(pnp_module.pnp)
    assert SHIPPED_STEP in source, "pnp's data step changed: update this experiment"
    namespace = dict(pnp_module.__dict__)
    calls = []

    def conjugate_gradient(normal_op, rhs, x0=None, num_iters=30, tol=1e-6):
        def counted(u):
            calls.append(1)
            return normal_op(u)
        return pnp_module.conjugate_gradient(counted, rhs, x0, num_iters, tol)

    namespace["conjugate_gradient"] = conjugate_gradient
    exec(source.replace(SHIPPED_STEP, STEPS[start]), namespace)
    return namespace["pnp"], calls


def main():
    start = sys.argv[1]
    cg = {"cg_tol": float(sys.argv[2]), "cg_iters": int(sys.argv[3])} if len(sys.argv) > 2 else {}
    function, calls = counted_pnp(start)
    registry.SAMPLERS["pnp"] = dataclasses.replace(registry.SAMPLERS["pnp"], run=function)
    cases, rec = pnp_experiment("real_R4,real_R6")
    denoiser = rec.denoiser()
    for case in cases:
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)
        inputs = rec._run_inputs(kn, sampling, maps, True)
        op = SenseOp(maps, sampling)
        for zeta in (1 / 16, 1 / 4):
            calls.clear()
            t0 = time.perf_counter()
            x, _, _ = posterior_samples("pnp", denoiser, kn, op, num_samples=1, seed=0, slice_ids=[0],
                                        noise_std=noise_std, zeta=zeta, **inputs, **cg)
            image = (combine_map_images(x * support) * scale.view(-1, 1, 1)).abs().numpy()
            nrmse = scores(image, ref)["NRMSE"]
            print({"start": start, **cg, "case": case.name, "zeta": zeta, "cg_applications": len(calls),
                   "nrmse": round(nrmse, 6), "seconds": round(time.perf_counter() - t0, 1)}, flush=True)


if __name__ == "__main__":
    main()
