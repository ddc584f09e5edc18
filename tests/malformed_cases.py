"""A corpus of malformed and hostile inputs, each with the outcome every transport must give (tests/test_malformed.py).

A case is a good two-slice scan (32 x 32 phantom, 4 coils, R = 2 + 12 ACS lines, a noise scan) with one thing broken:
the header XML, the acquisitions or the gadget properties. Outcomes:
- ``error``: no images, an error that matches ``pattern`` (ERROR for Gadgetron peers, the replay's exception);
- ``images``: every slice delivered and no error; ``pattern`` (if any) must appear in the images' DPM_InputWarnings;
- ``fallback``: every slice delivered as the flagged SENSE fallback, and an error matching ``pattern``.
``spawned_parser_dies``: gadgetron-python parses the header itself before our code runs (execute mode), so for a header
its parser refuses the child process ends without our ERROR — the documented limit of execute mode; connect mode and
replay use our tolerant parser.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import Callable

import ismrmrd
import numpy as np

from gadgets.mrd_io import make_header, make_raw_acquisitions
from tests.harness import asymmetric_echo, noisy_phantom, oversampled_phantom, slices_as_slab

H = W = 32
C, S = 4, 2
NUM_ACS = 12


@dataclasses.dataclass
class Case:
    name: str
    outcome: str                        # "error" | "images" | "fallback"
    pattern: str | None                 # what the error (or the input warning) must say
    build: Callable                     # () -> (header_xml, acquisitions, properties)
    spawned_parser_dies: bool = False   # gadgetron-python refuses the header before our code runs (execute mode)


def _base():
    kos, noise = noisy_phantom(H, W, C, S, seed=31, noise_samples=256)
    mask = np.zeros(H, dtype=bool)
    mask[H // 2 % 2::2] = True
    return make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, noise=noise)


_BASE = None


def base():
    global _BASE
    if _BASE is None:
        _BASE = _base()
    return _BASE.header_xml, copy.deepcopy(_BASE.acquisitions)


SENSE = {"method": "sense"}


def _imaging(acqs):
    return [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _with(fn, properties=None):
    """A builder: the base scan modified by ``fn(header_xml, acquisitions) -> (header_xml, acquisitions)``."""
    def build():
        header, acqs = base()
        header, acqs = fn(header, acqs)
        return header, acqs, dict(SENSE if properties is None else properties)
    return build


def _drop_centre(header, acqs):
    centre = H // 2
    return header, [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                    or a.idx.kspace_encode_step_1 != centre]


def _interleaved_without_acs(header, acqs):
    """What ismrmrd-tools' accelerated phantom sends: calibrationMode 'interleaved' and lattice lines only, none of
    them flagged as calibration (the ACS lines would come from the other volumes)."""
    header = re.sub(r"<calibrationMode>\w+</calibrationMode>", "<calibrationMode>interleaved</calibrationMode>", header)
    kept = []
    for a in acqs:
        if a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION):
            continue
        a.clear_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        kept.append(a)
    return header, kept


def _second_encoding(header, acqs):
    """A header with two encodings and, before encoding 0's lines, copies of them marked as readouts of encoding
    space 1 with other data (a second encoding's scan ahead of the imaging): they must not reach encoding 0's
    k-space."""
    encoding = re.search(r"<encoding>.*?</encoding>", header, re.S).group(0)
    header = header.replace(encoding, encoding + encoding, 1)
    extra = []
    for a in _imaging(acqs)[:8]:
        other = copy.deepcopy(a)
        other.encoding_space_ref = 1
        other.data[:] = 100 * a.data[::-1]
        extra.append(other)
    noise = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    return header, noise + extra + _imaging(acqs)


def _set_sample(value, which=0):
    def fn(header, acqs):
        line = _imaging(acqs)[which]
        line.data[0, 3] = value
        return header, acqs
    return fn


def _scale_all(factor):
    def fn(header, acqs):
        for a in _imaging(acqs):
            a.data[:] = a.data * factor
        return header, acqs
    return fn


def _zero_all(header, acqs):
    for a in _imaging(acqs):
        a.data[:] = 0
    return header, acqs


def _resize_line(channels=None, samples=None):
    def fn(header, acqs):
        line = _imaging(acqs)[5]
        data = np.array(line.data)
        c = channels or data.shape[0]
        n = samples or data.shape[1]
        line.resize(number_of_samples=n, active_channels=c, trajectory_dimensions=line.trajectory_dimensions)
        line.data[:] = np.resize(data, (c, n))
        if samples:
            line.center_sample = n // 2
        return header, acqs
    return fn


def _ky(value):
    def fn(header, acqs):
        _imaging(acqs)[4].idx.kspace_encode_step_1 = value
        return header, acqs
    return fn


def _slice_index(value):
    def fn(header, acqs):
        for a in _imaging(acqs):
            if a.idx.slice == 1:
                a.idx.slice = value
        return header, acqs
    return fn


def _duplicate_line(header, acqs):
    lines = _imaging(acqs)
    copy_ = copy.deepcopy(lines[3])
    copy_.data[:] = copy_.data * 3.0
    copy_.clearAllFlags()
    at = acqs.index(lines[3])
    acqs.insert(at + 1, copy_)
    return header, acqs


def _header(sub: Callable[[str], str]):
    return lambda header, acqs: (sub(header), acqs)


def _regex(pattern, repl):
    return _header(lambda h: re.sub(pattern, repl, h, count=1, flags=re.S))


def _matrix(y=None, x=None):
    def sub(h):
        enc = re.search(r"<encodedSpace>.*?</encodedSpace>", h, flags=re.S).group(0)
        new = enc
        if y is not None:
            new = re.sub(r"<y>\d+</y>", f"<y>{y}</y>", new, count=1)
        if x is not None:
            new = re.sub(r"<x>\d+</x>", f"<x>{x}</x>", new, count=1)
        return h.replace(enc, new, 1)
    return _header(sub)


def _odd_size(header, acqs):
    """A 31-line encoded matrix: the base scan's last line dropped and the header changed to match."""
    acqs = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) or a.idx.kspace_encode_step_1 < 31]
    for s in range(S):
        last = [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) and a.idx.slice == s][-1]
        last.setFlag(ismrmrd.ACQ_LAST_IN_SLICE)
    header = re.sub(r"(<encodedSpace>.*?<y>)32(</y>)", r"\g<1>31\g<2>", header, count=1, flags=re.S)
    header = re.sub(r"(<reconSpace>.*?<y>)32(</y>)", r"\g<1>31\g<2>", header, count=1, flags=re.S)
    header = re.sub(r"(<kspace_encoding_step_1>.*?<maximum>)31(</maximum>\s*<center>)16(</center>)",
                    r"\g<1>30\g<2>15\g<3>", header, count=1, flags=re.S)
    return header, acqs


def _fully_sampled(header, acqs):
    """Every line measured (the base scan's missing lines filled from the same phantom)."""
    kos, _ = oversampled_phantom(H, W, C, S, seed=31)
    raw = make_raw_acquisitions(kos.astype(np.complex64), np.ones(H, bool), num_acs=NUM_ACS)
    return raw.header_xml, copy.deepcopy(raw.acquisitions)


def _wide_acs(header, acqs):
    kos, _ = oversampled_phantom(H, W, C, S, seed=31)
    mask = np.zeros(H, dtype=bool)
    mask[::2] = True
    raw = make_raw_acquisitions(kos.astype(np.complex64), mask, num_acs=24)
    return raw.header_xml, copy.deepcopy(raw.acquisitions)


def _asymmetric_echo(header, acqs):
    """A 75 % echo: the first quarter of every oversampled readout (2 W samples) never recorded."""
    return header, asymmetric_echo(acqs, 2 * W // 4)


def _truncate(header, acqs):
    """The stream stops halfway through slice 1 (no LAST_IN_SLICE / MEASUREMENT)."""
    last = max(i for i, a in enumerate(acqs) if a.idx.slice == 1) - 6
    return header, acqs[:last]


def _noise_only(header, acqs):
    return header, [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _noise_nan(header, acqs):
    noise = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)][0]
    noise.data[1, 2] = np.nan
    return header, acqs


def _noise_channels(header, acqs):
    noise = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    for a in noise:
        data = np.array(a.data)[:C - 1]
        a.resize(number_of_samples=data.shape[1], active_channels=C - 1,
                 trajectory_dimensions=a.trajectory_dimensions)
        a.data[:] = data
    return header, acqs


def _identity(header, acqs):
    return header, acqs


_MODELS: dict[str, str] = {}


def _broken_model(kind: str) -> str:
    """The shipped FLAIR model damaged ("damaged": every weight perturbed by its tensor's std, card re-hashed) or cut
    ("truncated": the weights file cut in half under its original card); written once per process to a temp dir."""
    if kind not in _MODELS:
        import shutil
        import tempfile
        from pathlib import Path
        from dpm_core.checkpoints import DEFAULT_MODEL_PATH
        from tests.test_reconstruct import _damaged_copy
        folder = Path(tempfile.mkdtemp(prefix="dpm-malformed-"))
        if kind == "damaged":
            _MODELS[kind] = str(_damaged_copy(DEFAULT_MODEL_PATH, folder))
        else:
            card = Path(DEFAULT_MODEL_PATH).with_suffix(".json")
            weights = card.with_suffix(".safetensors")
            shutil.copy(card, folder / card.name)
            (folder / weights.name).write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            _MODELS[kind] = str(folder / card.name)
    return _MODELS[kind]


def _with_model(kind: str):
    def build():
        header, acqs = base()
        return header, acqs, {"method": "dpm", "model": _broken_model(kind), "steps": "3"}
    return build


def _slab(header, acqs):
    """The two slices as the two kz partitions of one slab (encoded and reconstructed z = 2, :func:`slices_as_slab`),
    every line at the slab centre: a 3-D scan accelerated along ky only."""
    header = re.sub(r"(<(encodedSpace|reconSpace)>.*?<z>)1(</z>)", r"\g<1>2\g<3>", header, flags=re.S)
    header = re.sub(r"(<kspace_encoding_step_2>.*?<maximum>)0(</maximum>.*?<center>)0(</center>)",
                    r"\g<1>1\g<2>1\g<3>", header, flags=re.S)
    header = re.sub(r"(<slice>.*?<maximum>)1(</maximum>)", r"\g<1>0\g<2>", header, count=1, flags=re.S)
    imaging = _imaging(acqs)
    slices_as_slab(imaging, np.mean([np.asarray(a.position) for a in imaging], axis=0))
    return header, acqs


def _slab_kz_accelerated(header, acqs):
    header, acqs = _slab(header, acqs)
    dropped = next(a for a in _imaging(acqs) if a.idx.kspace_encode_step_2 == 1 and a.idx.kspace_encode_step_1 == 0)
    return header, [a for a in acqs if a is not dropped]


def _budget_header(header, acqs):
    big = make_header(num_lines=2048, readout=2048, num_coils=C, num_slices=128)     # 16 GiB of k-space
    from xsdata.formats.dataclass.serializers import XmlSerializer
    return XmlSerializer().render(big), acqs[:20]


CASES = [
    Case("control: a good scan", "images", None, _with(_identity)),
    Case("control: the DPM on a good scan", "images", None, _with(_identity, {"method": "dpm", "steps": "3"})),
    Case("no ACS block (centre line missing)", "error", r"centre line \d+ is not sampled", _with(_drop_centre)),
    Case("interleaved calibration, no ACS block in the volume", "error", r"calibrationMode 'interleaved'",
         _with(_interleaved_without_acs)),
    Case("readouts of a second encoding space", "images", r"8 readout\(s\) of encoding space 1 skipped",
         _with(_second_encoding)),
    Case("non-Cartesian trajectory", "error", r"only 'cartesian'",
         _with(_regex(r"<trajectory>cartesian</trajectory>", "<trajectory>radial</trajectory>"))),
    Case("3-D header over 2-D data (one kz plane of 8)", "error", r"only 1 of 8 kz partitions hold lines",
         _with(_regex(r"(<encodedSpace>.*?<z>)1(</z>)", r"\g<1>8\g<2>"))),
    Case("3-D slab (2 partitions, ky accelerated)", "images", None, _with(_slab)),
    Case("3-D slab accelerated along kz", "error", r"accelerated along kz", _with(_slab_kz_accelerated)),
    Case("a NaN sample", "images", r"NaN/Inf samples dropped", _with(_set_sample(np.nan))),
    Case("an Inf sample", "images", r"NaN/Inf samples dropped", _with(_set_sample(np.inf))),
    Case("huge sample values (1e30)", "images", None, _with(_scale_all(1e30))),
    Case("all-zero data", "error", r"all zero", _with(_zero_all)),
    Case("one line with another coil count", "error", r"channels", _with(_resize_line(channels=C - 1))),
    Case("one line with another sample count", "error", r"must have the same echo",
         _with(_resize_line(samples=48))),
    Case("ky outside the encoded matrix", "error", r"outside the encoded matrix", _with(_ky(400))),
    Case("odd matrix (31 lines)", "images", None, _with(_odd_size)),
    Case("slice index beyond encodingLimits", "images", None, _with(_slice_index(7))),
    Case("a conflicting duplicate line", "images", r"repeated line\(s\) averaged", _with(_duplicate_line)),
    Case("absurd declared matrix (100000 lines)", "error", r"outside 1\.\.2048", _with(_matrix(y=100000))),
    Case("a volume over the k-space budget", "error", r"GiB budget", _with(_budget_header)),
    Case("unknown XML element", "images", None,
         _with(_regex(r"<encoding>", "<encoding><vendorTweak>7</vendorTweak>")), spawned_parser_dies=True),
    Case("malformed XML", "error", r"not well-formed", _with(_header(lambda h: h[:-40])),
         spawned_parser_dies=True),
    Case("no <encodingLimits>", "images", None, _with(_regex(r"<encodingLimits>.*?</encodingLimits>", "")),
         spawned_parser_dies=True),
    Case("no <encodedSpace>", "error", r"lacks the required element <encodedSpace>",
         _with(_regex(r"<encodedSpace>.*?</encodedSpace>", "")), spawned_parser_dies=True),
    Case("empty stream", "error", r"no imaging k-space", _with(lambda h, a: (h, []))),
    Case("noise scan only", "error", r"no imaging k-space", _with(_noise_only)),
    Case("truncated stream (ends inside slice 1)", "images", None, _with(_truncate)),
    Case("noise scan with a NaN", "error", r"noise scan contains NaN", _with(_noise_nan)),
    Case("noise scan with another coil count", "error", r"channels", _with(_noise_channels)),
    Case("fully sampled scan", "images", None, _with(_fully_sampled)),
    Case("wide ACS block (24 of 32 lines)", "images", None, _with(_wide_acs)),
    Case("asymmetric echo (75 % of the readout)", "images", None, _with(_asymmetric_echo)),
    Case("unknown property", "error", r"unknown property 'metod'", _with(_identity, {"metod": "sense"})),
    Case("property out of range (steps=-3)", "error", r"'steps' = '-3' is invalid",
         _with(_identity, {"method": "dpm", "steps": "-3"})),
    Case("unknown sampler", "error", r"'sampler' = 'nonsense' is invalid",
         _with(_identity, {"method": "dpm", "sampler": "nonsense"})),
    Case("zeta = nan", "error", r"'zeta' = 'nan' is invalid", _with(_identity, {"method": "dpm", "zeta": "nan"})),
    Case("absent device (cuda:7)", "error", r"'device' = 'cuda:7' is invalid",
         _with(_identity, {"method": "dpm", "device": "cuda:7"})),
    Case("time budget spent (time_budget=1e-6)", "fallback", r"time budget of 1e-06 s per volume spent",
         _with(_identity, {"method": "dpm", "steps": "3", "time_budget": "1e-6"})),
    Case("missing model file", "fallback", r"DPM failed .*delivered the SENSE fallback",
         _with(_identity, {"method": "dpm", "model": "/nonexistent/model.json", "steps": "3"})),
    Case("truncated model weights", "fallback", r"DPM failed .*delivered the SENSE fallback", _with_model("truncated")),
    Case("damaged model weights, card re-hashed", "fallback", r"worse than a Gaussian low-pass",
         _with_model("damaged")),
]
