"""Send DICOM instances to a PACS with pynetdicom C-STORE, with retries and a per-instance report.

Nothing here deletes or modifies local files: a failed send leaves every file where it was, and the report says
which instances did not arrive so the site can resend them (``python -m gadgets.pacs DIR --host H --port P``).
A refused or timed-out connection is reported in :class:`SendReport`, never raised.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

__all__ = ["InstanceResult", "SendReport", "send_to_pacs", "main"]

log = logging.getLogger(__name__)

_SUCCESS = 0x0000
_WARNINGS = (0xB000, 0xB006, 0xB007)   # coercion of data elements / elements discarded / dataset mismatch: stored


@dataclass
class InstanceResult:
    """Outcome for one instance: ``status`` is the last C-STORE status (None when no response came)."""

    sop_instance_uid: str
    path: Path | None
    status: int | None = None
    attempts: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == _SUCCESS or self.status in _WARNINGS)


@dataclass
class SendReport:
    """What happened to each instance of one :func:`send_to_pacs` call."""

    host: str
    port: int
    called_ae: str
    instances: list[InstanceResult] = field(default_factory=list)
    associations: int = 0             # successful associations
    connection_errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def n_sent(self) -> int:
        return sum(r.ok for r in self.instances)

    @property
    def n_failed(self) -> int:
        return len(self.instances) - self.n_sent

    @property
    def ok(self) -> bool:
        return self.n_failed == 0

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.instances if not r.ok]

    def summary(self) -> str:
        s = (f"C-STORE to {self.called_ae}@{self.host}:{self.port}: {self.n_sent}/{len(self.instances)} stored "
             f"in {self.elapsed_s:.2f} s over {self.associations} association(s)")
        if self.n_failed:
            s += f"; {self.n_failed} failed (files kept)"
        if self.connection_errors:
            s += f"; connection errors: {self.connection_errors[-1]}"
        return s


def _load(item, k: int) -> tuple[Dataset | None, Path | None, str]:
    """(dataset, path, error) for one input, a path or a Dataset."""
    if isinstance(item, Dataset):
        return item, None, ""
    path = Path(item)
    try:
        return pydicom.dcmread(path), path, ""
    except Exception as exc:  # noqa: BLE001 - unreadable file is reported, not raised
        return None, path, f"cannot read {path} as DICOM ({exc}); check the file or re-export it"


def _expand(paths_or_datasets) -> list:
    """Accept a folder, a single path/Dataset, or an iterable of them; folders are walked for *.dcm."""
    if isinstance(paths_or_datasets, (str, os.PathLike, Dataset)):
        paths_or_datasets = [paths_or_datasets]
    items: list = []
    for it in paths_or_datasets:
        if isinstance(it, (str, os.PathLike)) and Path(it).is_dir():
            items.extend(sorted(Path(it).rglob("*.dcm")))
        else:
            items.append(it)
    return items


def send_to_pacs(paths_or_datasets: Iterable | str | os.PathLike | Dataset, host: str, port: int,
                 called_ae: str = "ORTHANC", calling_ae: str = "DPMFLAIR", retries: int = 3,
                 timeout: float = 10.0, retry_wait_s: float = 1.0) -> SendReport:
    """C-STORE instances to ``called_ae`` at ``host:port`` and report per instance.

    Args:
        paths_or_datasets: DICOM file paths, folders (walked for ``*.dcm``) or pydicom Datasets.
        host, port: the PACS (or DICOM node) address.
        called_ae / calling_ae: application entity titles (the PACS must accept ``calling_ae``).
        retries: extra attempts after the first for instances that failed and for failed associations.
        timeout: seconds for connecting, association negotiation, each DIMSE response and network silence.
        retry_wait_s: pause before each retry (doubled every retry).

    Returns:
        :class:`SendReport`; ``report.ok`` is True when every instance was stored (success or warning status).
    """
    t0 = time.monotonic()
    report = SendReport(host=host, port=int(port), called_ae=called_ae)
    loaded: list[tuple[InstanceResult, Dataset | None]] = []
    for k, item in enumerate(_expand(paths_or_datasets)):
        ds, path, err = _load(item, k)
        uid = str(ds.get("SOPInstanceUID", "")) if ds is not None else ""
        loaded.append((InstanceResult(sop_instance_uid=uid, path=path, error=err), ds))
    pending = [(r, ds) for r, ds in loaded if ds is not None]
    report.instances = [r for r, _ in loaded]
    if not pending:
        report.elapsed_s = time.monotonic() - t0
        return report

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    # One presentation context per SOP class, offering the file's transfer syntax plus the two uncompressed ones.
    contexts: dict[str, list[str]] = {}
    for _, ds in pending:
        sop_class = str(ds.SOPClassUID)
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
        contexts.setdefault(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if ts not in contexts[sop_class]:
            contexts[sop_class].append(ts)
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} different SOP classes in one send; split the send (at most 128)")
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, syntaxes)

    wait = retry_wait_s
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(wait)
            wait *= 2
        try:
            assoc = ae.associate(host, int(port), ae_title=called_ae)
        except Exception as exc:  # noqa: BLE001 - e.g. name resolution; reported
            report.connection_errors.append(f"attempt {attempt + 1}: {exc}")
            continue
        if not assoc.is_established:
            why = ("association rejected" if assoc.is_rejected else
                   "association aborted" if assoc.is_aborted else
                   "connection refused or timed out")
            report.connection_errors.append(f"attempt {attempt + 1}: {why} by {called_ae}@{host}:{port}")
            log.warning("PACS %s@%s:%s: %s (attempt %d of %d)", called_ae, host, port, why, attempt + 1, retries + 1)
            continue
        report.associations += 1
        try:
            for result, ds in pending:
                if not assoc.is_established:
                    break
                result.attempts += 1
                try:
                    status = assoc.send_c_store(ds)
                except Exception as exc:  # noqa: BLE001 - a bad dataset must not stop the others
                    result.error = f"C-STORE raised {type(exc).__name__}: {exc}"
                    continue
                if status and "Status" in status:
                    result.status = int(status.Status)
                    result.error = "" if result.ok else f"C-STORE status 0x{result.status:04X}"
                else:
                    result.status = None
                    result.error = "no C-STORE response (timeout or aborted association)"
        finally:
            if assoc.is_established:
                assoc.release()
        pending = [(r, ds) for r, ds in pending if not r.ok]
        if not pending:
            break
    for result, _ in pending:
        if not result.error:
            result.error = "not sent: no association could be established" if not result.attempts else result.error
    report.elapsed_s = time.monotonic() - t0
    log.info(report.summary())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gadgets.pacs FILES_OR_DIRS --host H --port P``; exit 0 when everything was stored."""
    p = argparse.ArgumentParser(description="C-STORE DICOM files (folders are walked for *.dcm) to a PACS.")
    p.add_argument("inputs", nargs="+", help="DICOM files or folders")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--called-ae", default="ORTHANC")
    p.add_argument("--calling-ae", default="DPMFLAIR")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = send_to_pacs(args.inputs, args.host, args.port, called_ae=args.called_ae,
                          calling_ae=args.calling_ae, retries=args.retries, timeout=args.timeout)
    print(report.summary())
    for r in report.failed:
        print(f"FAILED {r.path or r.sop_instance_uid}: {r.error}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
