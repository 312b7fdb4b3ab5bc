"""Recording: exact attention blocks and answer logits from one forward (see capture.py)."""

from cdviz.record.capture import Capture, CaptureError, CapturePlan, SamplePlan
from cdviz.record.recorder import RecordOptions, record, record_run

__all__ = ["Capture", "CaptureError", "CapturePlan", "SamplePlan", "RecordOptions", "record", "record_run"]
