"""Every stream configuration in configs_xml/ names Python targets that exist and properties the gadget accepts."""
from __future__ import annotations

import importlib
import inspect
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gadgets.config import parse_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs_xml").glob("*.xml"))


def test_the_stream_variants_exist():
    names = {p.name for p in CONFIGS}
    assert {"dpm_recon.xml", "dpm_recon_connect.xml", "dpm_recon_dicom.xml", "dpm_recon_acquisitions.xml",
            "dpm_recon_offline.xml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_targets_and_properties(path):
    root = ET.parse(path).getroot()
    assert root.tag == "configuration" and root.findtext("version") == "2"
    assert root.find("readers/reader") is not None and root.find("writers/writer") is not None
    stream = root.find("stream")
    for g in stream.findall("gadget"):
        assert g.findtext("dll") and g.findtext("classname"), f"{path.name}: gadget without dll/classname"
    externals = stream.findall("external")
    assert len(externals) == 1, f"{path.name}: expected exactly one <external> node"
    external = externals[0]
    execute, connect = external.find("execute"), external.find("connect")
    assert (execute is None) != (connect is None)
    if execute is not None:
        assert execute.get("type") == "python"
        module = importlib.import_module(execute.get("name"))
        target = getattr(module, execute.get("target"))
        assert callable(target) and list(inspect.signature(target).parameters) == ["connection"]
    else:
        assert 0 < int(connect.get("port")) < 65536
    config = parse_config(external.find("configuration"))       # raises on any unknown property or bad value
    assert config.method == "dpm" and config.model is None and config.fallback
    # the last gadget turns images into output
    assert stream.findall("gadget")[-1].findtext("classname") in ("ImageFinishGadget", "DicomFinishGadget")
