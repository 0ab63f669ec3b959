#!/usr/bin/env bash
# Fill the git-ignored .whl/ that travels with benchmarks/gpu_suite.sh to the GPU machine (the device tool's
# carry [".whl"]): the wheels that machine lacks (Python 3.12, manylinux x86_64; pins from constraints.txt) and
# the asset files the suite reads, then print the carried size (files git tracks or would add, plus .whl/)
# against the 64 MiB limit; exit 1 when over. Run from anywhere in the checkout, where pip can download:
#   bash benchmarks/gpu_carry.sh            (LIVECAM_ASSETS: the shared assets, default ../shared/assets)
# Not carried: openvino (59 MB, does not fit; stills_gpu stands in for the re-id network without it).
set -eu
cd "$(dirname "$0")/.."
A=${LIVECAM_ASSETS:-../shared/assets}; W=.whl; PY=${PYTHON:-python3}; LIMIT=$((64 << 20))
rm -rf "$W"; mkdir -p "$W/assets"
# diffusers refuses to import without requests (+ urllib3, charset_normalizer); livecam's model store needs
# platformdirs; the face tracker and segmenter need mediapipe (+ absl-py, flatbuffers).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$W" \
  diffusers==0.42.1 requests==2.34.2 urllib3==2.8.0 charset_normalizer==3.5.3 platformdirs==4.14.8 \
  mediapipe==1.2.3 absl-py==2.5.1 flatbuffers==25.12.19
for f in models/face_landmarker/face_landmarker.task models/segmentation/selfie_segmentation.tflite \
    models/face_detection/face_detection_yunet_2023mar.onnx images/faces/obama_official_2012.jpg \
    matting/video/video_01_S001-04__sh_bookshelf.mp4 video/video_01_ccby_multiface.mp4; do
  mkdir -p "$W/assets/$(dirname "$f")"; cp "$A/$f" "$W/assets/$f"
done
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb | tail -1 | cut -f1)
carry=$(du -sb "$W" | cut -f1)
total=$((tree + carry))
awk -v t="$tree" -v c="$carry" -v l="$LIMIT" 'BEGIN { printf "carried: tree %d + .whl %d = %d bytes = %.2f MiB",
  t, c, t + c, (t + c) / 1048576; printf " (limit %.0f MiB)\n", l / 1048576 }'
((total < LIMIT)) || { echo "over the 64 MiB that travels to the GPU machine" >&2; exit 1; }
