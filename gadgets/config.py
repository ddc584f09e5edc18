"""The one configuration module: reconstruction properties from XML, JSON or the command line into one typed value.

Every transport configures the same :class:`GadgetConfig` (the pipeline, :mod:`gadgets.pipeline`, runs from it):
- Gadgetron XML: ``<property name="N" value="V"/>`` children of the gadget's ``<configuration>`` element
  (:func:`element_properties`; execute mode, connect mode, the server's named configurations);
- FIRE/OpenRecon JSON parameters sent as TEXT (:func:`text_parameters`);
- the command line: ``--set name=value`` of dpm-server, dpm-replay and dpm-demo (:func:`parse_properties`).
:func:`parse_config` turns any of them into a :class:`GadgetConfig`, refusing unknown names and bad values with the list
of accepted ones.
"""
from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable

__all__ = ["GadgetConfig", "ACCEPTED_PROPERTIES", "parse_config", "element_properties", "parse_properties",
           "text_parameters"]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _optional(convert: Callable) -> Callable:
    def parse(text: str):
        return None if text.strip().lower() in ("", "none", "default", "auto") else convert(text)
    return parse


def _choice(*options: str) -> Callable:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {options}, got {text!r}")
        return text
    return parse


def _num_maps(text: str):
    if text == "auto":
        return "auto"
    value = int(text)
    if value not in (1, 2):
        raise ValueError(f"expected 1, 2 or auto, got {text!r}")
    return value


def _sampler(text: str) -> str:
    from dpm_core.samplers import SAMPLERS
    if text not in SAMPLERS:
        raise ValueError(f"expected one of {sorted(SAMPLERS)}, got {text!r}")
    return text


def _device(text: str) -> str:
    """auto, cpu, cuda or cuda:N, checked against this machine at start: a missing GPU is refused, not a fallback."""
    from dpm_core.reconstruct import resolve_device
    resolve_device(text.strip())
    return text.strip()


def _positive_or(keywords: dict, expected: str) -> Callable[[str], object]:
    """A parser of a positive finite number, or one of ``keywords`` (lower-case word -> value)."""
    def parse(text: str):
        word = text.strip().lower()
        if word in keywords:
            return keywords[word]
        value = float(text)
        if not (value > 0 and value != float("inf")):
            raise ValueError(f"expected {expected}, got {text!r}")
        return value
    return parse


# ζ: a number, "auto" (chosen per scan from the data), or empty/none/default (the model card's table).
_zeta = _positive_or({"": None, "none": None, "default": None, "auto": "auto"},
                     "a positive finite number, auto or default")
# σ of the DPM warm start from the SENSE image; default: the Reconstructor's; none/off: start from pure noise.
_warm_start = _positive_or({"none": None, "off": None, "false": None, "no": None, "": "default", "default": "default"},
                           "a positive finite σ, default or none")
# GiB of working memory per sampler call, or auto (what the device has free).
_memory_budget = _positive_or({"": "auto", "auto": "auto"}, "a positive number of GiB or auto")
# Seconds one DPM volume may take before its SENSE fallback is sent instead, or none (no limit).
_time_budget = _positive_or({"": None, "none": None, "off": None}, "a positive number of seconds or none")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text!r}")
    return value


def _series(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65000:
        raise ValueError(f"expected a series number 0..65000, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class GadgetConfig:
    """Gadget settings (``<property name="..." value="..."/>``; defaults in brackets).

    method: dpm | sense | l1_wavelet | zero_filled [dpm].
    model: auto | a registered model's name (e.g. flair_default, foundation_default) | a path to a model card .json
    [auto: chosen per scan from the header's contrast, :mod:`dpm_core.model_choice`].
    model_dirs: comma-separated folders of the site's own model cards, preferred to the shipped ones [none].
    sampler: sampler name [fast].  steps: sampler steps [sampler default].
    zeta: data-consistency ζ, a number | auto (per scan: GCV; held-out lines for pnp) | default [default: the model
    card's table where it brackets the scan's R, else auto].
    warm_start: σ at which the DPM starts from the SENSE image | none (from pure noise) | default [default:
    dpm_core.reconstruct.WARM_START_SIGMA].
    memory_budget_gb: GiB of working memory one sampler call may use (a volume runs in as many calls as it needs)
    | auto (what the device has free) [auto].
    time_budget: seconds one volume's DPM stage may take; when the time is spent, or the sampling's projected finish
    passes it, the volume's flagged SENSE fallback is sent instead (a slow device never holds the exam) | none [none].
    seed [0].  device: auto | cpu | cuda | cuda:N [auto].  num_samples: posterior samples [1].
    coil_method: fast | sigpy [fast].  num_maps: 1 | 2 | auto [auto].
    series_index: series of repetition 0 [1].  std_series_index: series of the posterior-std maps [1001].
    pixel_format: complex | uint16 — complex64 images, or magnitudes as uint16 with window meta, as FIRE/OpenRecon
    modules send them [complex].
    send_std: send std maps when num_samples > 1 [true].  fallback: SENSE fallback when DPM fails [true].
    fallback_series_index: series for fallback images [series_index].
    trigger: volume | slice — acquisition input only: reconstruct whole volumes or each slice as it completes [volume].
    error_report: error | log — how per-volume problems reach a Gadgetron peer [error]. error: one ERROR message after
    the last image (Gadgetron as a server hands it to its client). log: only the gadget's log and the image flags,
    unless the stream produced no image at all — for ``gadgetron --from_stream`` (offline processing), which aborts on
    an ERROR (rc 134) and loses the images already sent, a delivered SENSE fallback included (docs/gadget.md).
    MRD peers always get the TEXT "ERROR: ..." (it aborts nothing).
    """
    method: str = "dpm"
    model: str | None = None
    model_dirs: tuple[str, ...] = ()
    sampler: str = "fast"
    steps: int | None = None
    zeta: float | str | None = None
    warm_start: float | str | None = "default"
    memory_budget_gb: float | str = "auto"
    time_budget: float | None = None
    seed: int = 0
    device: str = "auto"
    num_samples: int = 1
    coil_method: str = "fast"
    num_maps: int | str = "auto"
    series_index: int = 1
    pixel_format: str = "complex"
    std_series_index: int = 1001
    send_std: bool = True
    fallback: bool = True
    fallback_series_index: int | None = None
    trigger: str = "volume"
    error_report: str = "error"

    def reconstructor_kwargs(self) -> dict:
        """Keyword arguments for :class:`dpm_core.reconstruct.Reconstructor`."""
        options = {} if self.steps is None else {"steps": self.steps}
        return dict(method=self.method, model=self.model, sampler=self.sampler, sampler_options=options,
                    num_samples=self.num_samples, zeta=self.zeta, seed=self.seed, device=self.device,
                    coil_method=self.coil_method, num_maps=self.num_maps,
                    memory_budget="auto" if self.memory_budget_gb == "auto" else int(self.memory_budget_gb * 2 ** 30),
                    time_budget=self.time_budget,
                    **({} if self.warm_start == "default" else {"warm_start": self.warm_start}))


_PARSERS: dict[str, Callable] = {
    "method": _choice("dpm", "sense", "l1_wavelet", "zero_filled"),
    "model": _optional(str),
    "model_dirs": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
    "sampler": _sampler,
    "steps": _optional(_positive_int),
    "zeta": _zeta,
    "warm_start": _warm_start,
    "memory_budget_gb": _memory_budget,
    "time_budget": _time_budget,
    "seed": int,
    "device": _device,
    "num_samples": _positive_int,
    "coil_method": _choice("fast", "sigpy"),
    "num_maps": _num_maps,
    "series_index": _series,
    "pixel_format": _choice("complex", "uint16"),
    "std_series_index": _series,
    "send_std": _parse_bool,
    "fallback": _parse_bool,
    "fallback_series_index": _optional(_series),
    "trigger": _choice("volume", "slice"),
    "error_report": _choice("error", "log"),
}
ACCEPTED_PROPERTIES = tuple(_PARSERS)


def element_properties(config) -> dict:
    """``<configuration>`` Element (or None) -> {name: value}: ``<property name="N" value="V"/>`` (attributes) or
    ``<property><name>N</name><value>V</value></property>`` (Gadgetron's older form). The one XML property reader."""
    properties = {}
    if config is None:
        return properties
    for prop in config.iter("property"):
        name = prop.get("name", prop.findtext("name"))
        value = prop.get("value", prop.findtext("value"))
        if name is None:
            raise ValueError(f"gadget configuration: a <property> without a name: {ET.tostring(prop)!r}")
        properties[name] = "" if value is None else value
    return properties


def parse_properties(pairs: list[str]) -> dict:
    """Command-line ``--set`` pairs ["name=value", ...] -> {name: value} (the gadget's properties)."""
    config = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects name=value (a gadget property), got {pair!r}")
        name, value = pair.split("=", 1)
        config[name.strip()] = value.strip()
    return config


def parse_config(config) -> GadgetConfig:
    """``connection.config`` (an ``xml.etree`` Element, XML text, a dict, or None) -> :class:`GadgetConfig`.

    Properties are ``<property name="N" value="V"/>`` (attributes) or ``<property><name>N</name><value>V</value>
    </property>`` (Gadgetron's older form). Raises ValueError naming the property, the bad value and what is accepted.
    """
    if config is None:
        return GadgetConfig()
    if isinstance(config, (str, bytes)):
        config = ET.fromstring(config) if config.strip() else None
        if config is None:
            return GadgetConfig()
    pairs = config if isinstance(config, dict) else element_properties(config)
    values = {}
    for name, value in pairs.items():
        if name not in _PARSERS:
            raise ValueError(f"gadget configuration: unknown property {name!r}; accepted: {', '.join(_PARSERS)}")
        try:
            values[name] = _PARSERS[name](str(value).strip())
        except ValueError as exc:
            raise ValueError(f"gadget configuration: property {name!r} = {value!r} is invalid: {exc}") from exc
    return GadgetConfig(**values)


def text_parameters(texts: list[str]) -> tuple[str | None, dict, list[str]]:
    """FIRE/OpenRecon JSON parameters sent as TEXT -> (configuration name or None, properties, ignored keys).

    Each TEXT that parses as a JSON object with a ``parameters`` object counts, later ones over earlier ones, as the
    reference MRD server reads them: ``customconfig`` (when not empty) over ``config`` names the configuration; keys
    that are gadget properties (``method``, ``num_samples``, ``series_index``, ...) become properties (values as
    text); other keys are ignored and listed. Text that is not such JSON is ignored (it is logged by the caller).
    """
    name, properties, ignored = None, {}, []
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        parameters = message.get("parameters") if isinstance(message, dict) else None
        if not isinstance(parameters, dict):
            continue
        for key, value in parameters.items():
            if key in ("config", "customconfig"):
                continue
            if key in ACCEPTED_PROPERTIES:
                properties[key] = value if isinstance(value, str) else json.dumps(value)
            else:
                ignored.append(key)
        for key in ("config", "customconfig"):
            if isinstance(parameters.get(key), str) and parameters[key].strip():
                name = parameters[key].strip()
    return name, properties, ignored
