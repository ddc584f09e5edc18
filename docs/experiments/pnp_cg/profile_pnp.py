"""Profile of one pnp reconstruction, real R 4 (the product model): OMP_NUM_THREADS=1 python docs/experiments/pnp_cg/profile_pnp.py"""
import cProfile, pstats, sys, time, torch
sys.path.insert(0, "benchmarks")  # run from the repository root
torch.set_num_threads(1)
import bench_real
from dpm_core.reconstruct import Reconstructor
case = bench_real.real_cases(lambda n: n == "real_R4")[0]
H = case.kspace.shape[2]
under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
rec = Reconstructor(method="dpm", sampler="pnp", model=str(bench_real.product_model(case).card_path), device="cpu", progress=None)
rec.reconstruct(under, case.mask)  # warm
pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
res = rec.reconstruct(under, case.mask)
pr.disable(); print("total", time.perf_counter() - t, res.info.get("timings"))
st = pstats.Stats(pr); st.sort_stats("cumulative").print_stats(35)
