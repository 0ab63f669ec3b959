"""Fail if the environment holds two OpenCV or two onnxruntime distributions (they overwrite each other's
files: mediapipe pulls opencv-contrib-python, insightface pulls onnxruntime by name)."""

import sys
from importlib.metadata import distributions

FAMILIES = {
    "OpenCV": {"opencv-python", "opencv-contrib-python", "opencv-python-headless",
               "opencv-contrib-python-headless"},
    "onnxruntime": {"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"},
}
installed = {(d.metadata["Name"] or "").lower() for d in distributions()}
bad = False
for family, names in FAMILIES.items():
    found = sorted(installed & names)
    print(f"{family}: {', '.join(found) or 'none'}")
    if len(found) > 1:
        print(f"error: more than one {family} distribution is installed: {', '.join(found)}", file=sys.stderr)
        bad = True
sys.exit(1 if bad else 0)
