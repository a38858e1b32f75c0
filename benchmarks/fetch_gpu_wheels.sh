#!/usr/bin/env bash
# Builds .whl/ in the repository root: the Python packages a lent GPU machine lacks (Ray, DeepSpeed,
# pydantic, bitsandbytes and their needs), for its Python 3.12 on x86-64, at the versions
# constraints.txt pins. Run it here, on a machine with PyPI, once; benchmarks/gpu_suite.sh installs them
# there with no network.
#
# Copied from the workplace's GPU recipe (shared/gpu/fetch-wheels.sh), which was seen working on an
# H200 (Python 3.12, torch 2.11, transformers 5.17 already there). What travels to the GPU machine
# must stay under 64 MiB, so two wheels are slimmed: Ray's (its Java jars and dashboard web client
# dropped) and bitsandbytes' (only its CUDA 13 and CPU libraries kept: torch 2.11+cu130 there).
# About 55 MB in all. .whl/ is ignored by git: never commit wheels.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
pin() {  # the version constraints.txt pins for a package (any spelling of its name), else $2
  local v
  v=$(grep -iE "^$(echo "$1" | sed 's/[-_.]/[-_.]/g')==" constraints.txt | head -1 | cut -d= -f3)
  echo "${v:-$2}"
}
RAY=$(pin ray 2.60.0)
DS=$(pin deepspeed 0.19.8)
BNB=$(pin bitsandbytes 0.50.2)
rm -rf .whl && mkdir -p .whl
P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
   --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
   --platform manylinux2014_x86_64 -d .whl"
specs=("ray==$RAY" "bitsandbytes==$BNB")
for p in jsonschema jsonschema-specifications referencing rpds-py tensorboardX pydantic pydantic_core \
         annotated-types typing-inspection typing_extensions hjson nltk; do
  v=$(pin "$p" "")
  specs+=("$p${v:+==$v}")
done
python3 -m pip download -q $P "${specs[@]}"
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps "deepspeed==$DS" -w .whl
python3 - <<'PY'
import glob, os, re, zipfile

def slim(pattern, drop):
    src = glob.glob(pattern)[0]
    tmp = src + ".slim"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zo:
        for i in zi.infolist():
            if drop(i.filename):
                continue
            data = zi.read(i)
            if i.filename.endswith(".dist-info/RECORD"):
                data = b"\n".join(l for l in data.split(b"\n") if not drop(l.decode().split(",")[0]))
            zo.writestr(i, data)
    os.replace(tmp, src)

slim(".whl/ray-*.whl", lambda n: n.startswith(("ray/jars/", "ray/dashboard/client/")))
slim(".whl/bitsandbytes-*.whl",
     lambda n: bool(re.match(r"bitsandbytes/libbitsandbytes_(cuda(?!13)\d+|rocm\d+)", n)))
PY
du -sh .whl
