#!/bin/bash
# New-user check (docs/defaults.md): `mecca segment` with its defaults, one foreground click
# at the organ's interior-most voxel, then (a second run) no click but a box drawn tight
# round the organ (`--box`, its bounding box), CHAOS test case chaos_10 (held out of
# training), scored by `mecca evaluate`; liver, left and right kidney.
# Usage, from the repository root: bash benchmarks/one_click_new_user.sh [OUT]
# (needs the CHAOS MR folder of ../shared/extra/build_extra.py in ~/.cache/mecca-data-extra)
set -euo pipefail
export PATH=$PWD/.venv/bin:$PATH OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
D=$HOME/.cache/mecca-data-extra/chaos_mr
out=${1:-runs/one_click_new_user}
mkdir -p $out
for t in 1:liver 3:left_kidney 2:right_kidney; do
  v=${t%%:*}; name=${t#*:}
  python - "$D/labelsTr/chaos_10.nii.gz" $v > $out/clicks_$name.json <<'PY'
import json, sys
import nibabel as nib, numpy as np
from mecca.bench.points import next_point
gt = np.asarray(nib.load(sys.argv[1]).dataobj) == int(sys.argv[2])
p = next_point(np.zeros(gt.shape, bool), gt, True)
print(json.dumps({"format": "mecca.clicks", "version": 1, "space": "voxel",
                  "steps": [[{"kind": "foreground", "position": [int(x) for x in p]}]]}))
PY
  echo "== $name: $(cat $out/clicks_$name.json)"
  mecca segment $D/imagesTr/chaos_10.nii.gz --clicks $out/clicks_$name.json --out $out/$name.nii.gz --force 2>&1 | tail -6
  mecca evaluate $out/$name.nii.gz $D/labelsTr/chaos_10.nii.gz --labels $v
done
echo '{"format": "mecca.clicks", "version": 1, "space": "voxel", "steps": [[]]}' > $out/no_clicks.json
for t in 1:liver 3:left_kidney 2:right_kidney; do
  v=${t%%:*}; name=${t#*:}
  box=$(python - "$D/labelsTr/chaos_10.nii.gz" $v <<'PY'
import sys
import nibabel as nib, numpy as np
found = np.argwhere(np.asarray(nib.load(sys.argv[1]).dataobj) == int(sys.argv[2]))
print(",".join(str(int(x)) for x in [*found.min(0), *(found.max(0) + 1)]))
PY
)
  echo "== $name: --box $box, no clicks"
  mecca segment $D/imagesTr/chaos_10.nii.gz --clicks $out/no_clicks.json --box $box --out $out/${name}_box.nii.gz --force 2>&1 | tail -4
  mecca evaluate $out/${name}_box.nii.gz $D/labelsTr/chaos_10.nii.gz --labels $v
done
