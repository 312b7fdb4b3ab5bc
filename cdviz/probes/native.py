"""The built-in native-format loaders, ``BUILTIN``; ``cdviz.probes.registry`` adds them to ``SOURCES``.

Each reads a local copy of a benchmark in the layout its authors released (never downloading),
streams ProbeItems with absolute image paths into that copy (images are never copied), and
raises ProbeError naming the file, line or key and the fix: at call time for a missing path or
bad option, from ``next()`` for a bad entry or file. Loaders never skip; they return an
ItemStream, which carries on after such an error, so a caller can record it and continue.
``check_images=False`` turns off the image-existence check.

    name                  path                                     module
    sugarcrepe            folder of add_obj.json, ... (7)          native_coco
    sugarcrepe_pp         folder of replace_obj.json, ... (5)      native_coco
    winoground            folder of examples.jsonl + images/       native_winoground
    aro_vg_relation       visual_genome_relation.json              native_lists
    aro_vg_attribution    visual_genome_attribution.json           native_lists
    whatsup               controlled_{images,clevr}_dataset.json   native_lists
    jsonl                 any JSONL in the generic format          native_jsonl

    cdviz probes import sugarcrepe PATH --out DIR     (or load_source("sugarcrepe", PATH, **options))
"""

from __future__ import annotations

from cdviz.probes.native_coco import load_sugarcrepe, load_sugarcrepe_pp
from cdviz.probes.native_jsonl import load_jsonl
from cdviz.probes.native_lists import load_aro_vg_attribution, load_aro_vg_relation, load_whatsup
from cdviz.probes.native_winoground import load_winoground

BUILTIN = {
    "sugarcrepe": load_sugarcrepe,
    "sugarcrepe_pp": load_sugarcrepe_pp,
    "winoground": load_winoground,
    "aro_vg_relation": load_aro_vg_relation,
    "aro_vg_attribution": load_aro_vg_attribution,
    "whatsup": load_whatsup,
    "jsonl": load_jsonl,
}

__all__ = [
    "BUILTIN",
    "load_aro_vg_attribution",
    "load_aro_vg_relation",
    "load_jsonl",
    "load_sugarcrepe",
    "load_sugarcrepe_pp",
    "load_whatsup",
    "load_winoground",
]
