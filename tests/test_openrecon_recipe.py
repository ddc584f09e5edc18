"""The OpenRecon recipe (docker/openrecon/) without Docker: its UI parameters are gadget properties whose defaults and
choices the gadget accepts, and an MRD client that sends what OpenRecon sends — NUL-terminated strings, the UI
defaults as JSON parameters in TEXT, the configuration name — gets uint16 magnitude images from the server started
with the recipe's command line (port and config folder aside)."""
from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path

import numpy as np

from gadgets.config import ACCEPTED_PROPERTIES, parse_config, text_parameters
from tests.test_server import ServerProcess

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "docker" / "openrecon"
LABEL = "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"


def ui() -> dict:
    return json.loads((RECIPE / "dpm_flair_json_ui.json").read_text())


def defaults_text() -> bytes:
    """What OpenRecon's client sends after the header: the UI parameters' values as JSON, NUL-terminated."""
    return json.dumps({"version": "1.1.0", "parameters": {p["id"]: p["default"] for p in ui()["parameters"]}}
                      ).encode() + b"\0"


def test_ui_parameters_are_gadget_properties_with_valid_defaults_and_choices():
    spec = ui()
    assert {"general", "reconstruction", "parameters"} <= set(spec)
    assert spec["reconstruction"]["port"] == 9002
    assert spec["reconstruction"]["transfer_protocol"]["protocol"] == "ISMRMRD"
    for parameter in spec["parameters"]:
        if parameter["id"] == "config":
            for value in parameter["values"]:
                assert (REPO / "configs_xml" / f"{value['id']}.xml").is_file(), value
            continue
        assert parameter["id"] in ACCEPTED_PROPERTIES, parameter["id"]
        values = [v["id"] for v in parameter.get("values", [])] or [parameter["default"]]
        for value in values + [parameter["default"]]:
            parse_config({parameter["id"]: str(value)})              # raises ValueError if the gadget refuses it
    name, properties, ignored = text_parameters([defaults_text().split(b"\0")[0].decode()])
    assert name == "dpm_recon_acquisitions" and ignored == [] and set(properties) == {
        p["id"] for p in spec["parameters"] if p["id"] != "config"}
    parse_config(properties)


def test_dockerfile_labels_the_ui_and_runs_a_command_line_the_server_accepts():
    dockerfile = (RECIPE / "Dockerfile").read_text()
    assert f'LABEL "{LABEL}"="${{OPENRECON_METADATA}}"' in dockerfile
    build = (RECIPE / "build.sh").read_text()
    assert "base64" in build and "dpm_flair_json_ui.json" in build
    cmd = json.loads(re.search(r"CMD (\[.*?\])", dockerfile, flags=re.S).group(1).replace("\\\n", ""))
    assert cmd[0] == "dpm-server" and cmd[cmd.index("--port") + 1] == str(ui()["reconstruction"]["port"])
    assert (REPO / "configs_xml" / f"{cmd[cmd.index('--default-config') + 1]}.xml").is_file()


def test_an_openrecon_style_client_gets_uint16_images(tmp_path):
    from gadgets.mrd_io import make_raw_acquisitions
    from tests.harness import correlated_noise, oversampled_phantom
    dockerfile = (RECIPE / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"CMD (\[.*?\])", dockerfile, flags=re.S).group(1).replace("\\\n", ""))
    args = cmd[1:]
    for option in ("--port", "--host", "--config-dir"):                # this machine's port and the repo's configs
        at = args.index(option)
        del args[at:at + 2]
    kos, _ = oversampled_phantom(48, 48, 4, 2, seed=41)
    noise, _ = correlated_noise(4, 256, 2e-3, seed=42)
    mask = np.zeros(48, dtype=bool)
    mask[::3] = True
    raw = make_raw_acquisitions(kos.astype(np.complex64), mask, num_acs=16, noise=noise)
    text = defaults_text().replace(b'"method": "dpm"', b'"method": "sense"')    # SENSE keeps the test quick
    process = ServerProcess("--config-dir", str(REPO / "configs_xml"), *args)
    try:
        items = [struct.pack("<HI", 5, len(text)) + text] + copy.deepcopy(raw.acquisitions)
        result = process.client(raw.header_xml, items, config_name="dpm_recon_acquisitions", null_terminated=True)
    finally:
        process.kill()
    assert result.closed and result.errors == [], process.log[-3000:]
    assert len(result.images) == 2 and all(i.data.dtype == np.uint16 for i in result.images)
    assert all(i.meta["DPM_Method"] == "sense" and "WindowCenter" in i.meta for i in result.images)
    assert not any(t.startswith("ERROR") for t in result.texts), result.texts
