"""``cdviz zoo build``: train the bundled demo models on the shapes world with cdviz's own trainer.

    teacher               larger LLaVA (vision tower, connector, decoder): CE plus grounding and route
                          losses, first on colour and existence questions alone, then on the full mix
    student-sft           smaller decoder, CE only, no teacher (baseline)
    student-kd            smaller decoder, CE + logit KD from the teacher ("existing KD")
    student-compodistill  smaller decoder, DPT -> DFT -> SFT with TAF, KD and VAT on the layers a
                          misalignment report of student-kd flags

The full mix (``ZooSpec.shapes_kinds``; default every kind) is scene descriptions, every probe
category's two-choice items in both orders and as yes/no match queries with both answers (the true
option and its hard negative, worded as the match protocol asks them: cdviz.prompts.match_texts),
and short questions. The held-out set is scored
and recorded with the match protocol (``ZooSpec.protocol``): a from-scratch 6-layer model did not
learn the two-choice letter format (a grounded teacher: 7.5% consistent, checkpoints/experiments/grounded-teacher), while image-text matching
is how compositional benchmarks usually score generative models.

The vision tower is pretrained first (cdviz/zoo/vision.py: naming each patch's colour, shape and
size) and then frozen; teacher and students share it, as the paper's share a pretrained SigLIP.
The grounding loss (cdviz/train/config.py ``ground``: at the answer position, -log of the share
of the image attention on the patches of the objects the answer is about) and the route loss
(``route``: -log of the answer position's attention on the question's words that name those
objects, in the layers below) stand in for the far larger data a real teacher learns binding
from: trained with CE alone, the teacher read colours off the image without binding them to
objects (``cdviz zoo binding``: 52% right, all answers a colour in view), and with grounding
alone it looked at every object in view equally (50%; checkpoints/DESIGNS.md). The students get
neither loss.

The students start from one initialisation. student-kd and student-compodistill get the same
number of optimizer steps, so the comparison isolates the CompoDistill ingredients;
``cdviz zoo seeds`` retrains both from other seeds for an interval on the recovered gap, and
``cdviz zoo variations`` changes one ingredient at a time. Every stage resumes: rerunning a
command skips finished models and continues unfinished ones from their last checkpoint.

    cdviz zoo build --out checkpoints      (see checkpoints/README.md for the measured time)

    spec.py        ZooSpec, the trainer settings and recipe every model shares, the build command
    vision.py      the vision tower's patch-attribute pretraining
    build.py       cdviz zoo build / evaluate: train, measure, write checkpoints/
    measure.py     record and report a pair, evaluate a model and its controls, the manifest
    variations.py  cdviz zoo variations / seeds
    readme.py      checkpoints/README.md from the manifest
"""

from cdviz.zoo.build import build_zoo, evaluate_zoo
from cdviz.zoo.measure import headline_view, sha256
from cdviz.zoo.readme import render_readme
from cdviz.zoo.spec import MODEL_FILES, MODELS, ZooSpec, heldout_probes
from cdviz.zoo.variations import VARIATIONS, build_seeds, build_variations

__all__ = ["MODEL_FILES", "MODELS", "VARIATIONS", "ZooSpec", "build_seeds", "build_variations", "build_zoo",
           "evaluate_zoo", "headline_view", "heldout_probes", "render_readme", "sha256"]
