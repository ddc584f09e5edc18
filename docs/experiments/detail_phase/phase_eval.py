"""Prior fit (real slice, synth subject 0) and the DPM on real cases with a given model card."""
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import numpy as np, torch
torch.set_num_threads(1)
import bench_prior_fit as pf
import bench_real as br
from dpm_core.checkpoints import load_checkpoint
from dpm_core.networks import ComplexDenoiser
from dpm_core.reconstruct import Reconstructor
from dpm_core.combine import rss
from dpm_core.fft import ifft2c
from dpm_core import metrics
model = sys.argv[1]
den = ComplexDenoiser(load_checkpoint(model)[0]).eval()
pf.SYNTH_SUBJECTS = 1
for name, x, support in pf.images():
    for sigma in (0.005, 0.01, 0.02, 0.04):
        noisy = (x + pf.noise_like(x, sigma)) * support
        with torch.no_grad():
            d = den(noisy, torch.full((x.shape[0],), sigma)) * support
        c, m = pf.ratios(d, x, noisy, support)
        print(f"fit {name} σ{sigma}: cplx {c:.3f} mag {m:.3f}", flush=True)
names = sys.argv[2].split(",")
cases = br.real_cases(lambda n: n in names) + br.synthetic_cases(lambda n: n in names, 3, 2)[0]
for case in cases:
    H = case.kspace.shape[2]
    under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
    ref = rss(ifft2c(case.kspace)).numpy()
    out = []
    for z in (None, 1.0, 4.0, 16.0):
        r = Reconstructor(method="dpm", model=model, device="cpu", progress=None, zeta=z).reconstruct(under, case.mask)
        out.append(f"ζ{r.info['zeta'] if z is None else z}:{metrics.nrmse(np.abs(r.images), ref):.5f}")
    print("dpm", case.name, " ".join(out), flush=True)
