"""Model choice by contrast: classification from real-format ISMRMRD headers, the registry, and the gadget's choice.

The reference for classification is MR physics with the vendors' typical protocol values (Siemens/GE defaults at
1.5-3 T): FLAIR = long-TR inversion recovery with TI near CSF's null (~2500 ms); MPRAGE / T1-FLAIR = inversion at
TI ~ 900 ms; STIR = TI ~ 150 ms; spin echo T1 = short TR and TE; T2 = long TR and TE; PD = long TR, short TE.
"""
import json
import subprocess

import ismrmrd
import numpy as np
import pytest

from dpm_core.model_choice import UNKNOWN, choose_model, classify_contrast, model_entries
from gadgets import assembly, mrd_io



@pytest.mark.parametrize("protocol, seq, tr, te, ti, expected", [
    ("AX FLAIR", "TurboSpinEcho", 9000, 90, 2500, "FLAIR"),          # the stroke protocol
    ("t2_tirm_tra_dark-fluid", "TIRM", 9000, 81, 2500, "FLAIR"),       # Siemens dark fluid
    ("t1_mprage_sag", "GradientEcho", 2300, 2.3, 900, "T1"),          # inversion at grey/white-matter T1
    ("t1_flair_tra", "TurboSpinEcho", 2000, 9, 860, "T1"),            # "FLAIR" in the name, T1 contrast
    ("stir_cor", "TurboSpinEcho", 4000, 40, 150, "T2"),               # short-tau inversion
    ("AXT1", "SE", 600, 12, None, "T1"),
    ("AXT2", "TSE", 5000, 100, None, "T2"),
    ("AXPD", "TSE", 3000, 15, None, "PD"),
    (None, None, 600, 12, None, "T1"),                                 # no protocol name: timing alone
    (None, None, 9000, 90, 2500, "FLAIR"),
    ("t2_tse_tra", None, None, None, None, "T2"),                      # no timing: the name
    ("ax_flair", None, None, None, None, "FLAIR"),
    ("localizer", "GradientEcho", 1500, 45, None, UNKNOWN),            # timing fits no rule, name names nothing
    (None, None, None, None, None, UNKNOWN),
    (None, None, 0, 0, 0, UNKNOWN),                                    # zeros mean "not given"
])
def test_classify_contrast_follows_the_sequence_physics(protocol, seq, tr, te, ti, expected):
    contrast, reason = classify_contrast(protocol, seq, tr, te, ti)
    assert contrast == expected, reason
    assert reason                                                      # always says why


@pytest.mark.parametrize("kw, expected", [
    (dict(protocol="AX FLAIR", tr_ms=9000.0, te_ms=90.0, ti_ms=2500.0), "FLAIR"),
    (dict(protocol="AX T1", tr_ms=550.0, te_ms=11.0, ti_ms=None, flip_deg=90.0), "T1"),
    (dict(protocol="AX T2", tr_ms=5200.0, te_ms=95.0, ti_ms=None, flip_deg=90.0), "T2"),
    (dict(protocol="", tr_ms=600.0, te_ms=12.0, ti_ms=None), "T1"),      # header without a protocol name
])
def test_scan_contrast_reads_written_headers(kw, expected):
    header = mrd_io.make_header(num_lines=32, readout=32, num_coils=2, **kw)
    round_trip = ismrmrd.xsd.CreateFromDocument(ismrmrd.xsd.ToXML(header))
    assert assembly.scan_contrast(round_trip)[0] == expected


def test_scan_contrast_of_an_ismrmrd_tools_phantom_is_unknown(tmp_path):
    """ismrmrd_generate_cartesian_shepp_logan writes no sequenceParameters and no protocol name."""
    path = tmp_path / "sl.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(path), "-m", "32", "-c", "2"], check=True,
                   capture_output=True, timeout=60)
    dataset = ismrmrd.Dataset(str(path), "dataset", False)
    header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
    dataset.close()
    contrast, reason = assembly.scan_contrast(header)
    assert contrast == UNKNOWN and "no TR/TE/TI" in reason


def test_shipped_models_cover_every_contrast_and_flair_gets_the_fine_tune():
    entries = model_entries()
    names = {e.name for e in entries}
    assert {"flair_default", "foundation_default"} <= names
    assert choose_model("FLAIR", entries)[0].name == "flair_default"
    for contrast in ("T1", "T2", "PD", UNKNOWN):                       # never the FLAIR fine-tune
        entry, reason = choose_model(contrast, entries)
        assert entry.name == "foundation_default", reason


def _write_card(folder, name, card):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(card))
    (folder / f"{name}.safetensors").write_bytes(b"")


def test_site_models_come_first_and_cards_without_serves_use_their_training_contrasts(tmp_path):
    site = tmp_path / "site"
    _write_card(site, "site_flair", {"training": {"stage": "finetune", "data": {"contrasts": ["AXFLAIR"]}}})
    _write_card(site, "site_t2", {"serves": ["T2"], "training": {"stage": "pretrain"}})
    (site / "orphan.json").write_text("{}")                             # no weights beside it: not a model
    entries = model_entries([site])
    assert [e.name for e in entries if e.site] == ["site_flair", "site_t2"]
    assert choose_model("FLAIR", entries)[0].name == "site_flair"
    assert choose_model("T2", entries)[0].name == "site_t2"
    assert choose_model("T1", entries)[0].name == "foundation_default"
    with pytest.raises(ValueError, match="does not exist"):
        model_entries([tmp_path / "missing"])
    _write_card(site, "bad", {"serves": ["T7"]})
    with pytest.raises(ValueError, match="serves"):
        model_entries([site])


def test_no_model_for_a_contrast_is_refused_with_the_fix(tmp_path):
    site = tmp_path / "only_flair"
    _write_card(site, "m", {"serves": ["FLAIR"]})
    entries = [e for e in model_entries([site]) if e.site]
    with pytest.raises(ValueError, match="model property"):
        choose_model("T1", entries)


@pytest.mark.parametrize("protocol, tr, te, ti, expected_model, expected_contrast", [
    ("AX FLAIR", 9000.0, 90.0, 2500.0, "flair_default", "FLAIR"),
    ("AX T1", 550.0, 11.0, None, "foundation_default", "T1"),
    ("", 5000.0, 100.0, None, "foundation_default", "T2"),              # no protocol name: the timing decides
])
def test_gadget_picks_the_model_from_the_header_and_records_it(protocol, tr, te, ti, expected_model,
                                                               expected_contrast):
    """Through the gadget's own code path (acquisitions -> buffers -> Pipeline): the chosen model's name, sha256,
    contrast and reason reach every image's meta (and so the DICOM and summary.json); the model property overrides."""
    from gadgets.config import parse_config
    from gadgets.pipeline import Pipeline
    from tests.harness import oversampled_phantom

    kspace_os, _ = oversampled_phantom(height=32, width=32, coils=4, slices=1)
    imaging = np.zeros(32, bool)
    imaging[::2] = True
    raw = mrd_io.make_raw_acquisitions(kspace_os, imaging, num_acs=12, header_kwargs=dict(
        protocol=protocol, tr_ms=tr, te_ms=te, ti_ms=ti))

    def meta_of_first_image(properties):
        sent, errors = [], []
        buffers = assembly.buffers_from_acquisitions(iter(raw.acquisitions), raw.header)
        Pipeline(parse_config(properties)).reconstruct_stream(buffers, raw.header, sent.append, errors)
        assert not errors and sent
        return ismrmrd.Meta.deserialize(sent[0].attribute_string)

    meta = meta_of_first_image({"steps": "2"})
    entry = {e.name: e for e in model_entries()}[expected_model]
    assert meta["DPM_Model"] == expected_model and meta["DPM_Contrast"] == expected_contrast
    assert meta["DPM_ModelSHA256"] == json.loads(entry.card_path.read_text())["sha256"]
    assert expected_contrast in meta["DPM_ModelChoice"]
    meta = meta_of_first_image({"steps": "2", "model": "flair_default"})
    assert meta["DPM_Model"] == "flair_default" and meta["DPM_ModelChoice"] == "given: flair_default"


def test_a_model_name_that_is_not_registered_is_refused_at_start():
    from gadgets.config import parse_config
    from gadgets.pipeline import Pipeline
    with pytest.raises(ValueError, match="flair_default.*foundation_default"):
        Pipeline(parse_config({"model": "flair_defualt"}))

