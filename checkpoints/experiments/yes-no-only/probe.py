"""Is "does the asked-about object have the proposed colour" linearly readable from a model's
answer-position hidden states? (checkpoints/DESIGNS.md, designs 12 and 13)

    python checkpoints/experiments/yes-no-only/probe.py checkpoints/teacher 4000 WORKDIR

Colour-category match queries ('What colour is the circle? Is the answer "green"? ...', one per
option) from N train-split shapes items to fit a logistic regression per hidden state, 600
test-split items to score it. Also prints how far apart the two options' hidden states are, against
their spread over items.
"""
import sys, torch, numpy as np
from PIL import Image
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from cdviz.models import load_model
from cdviz.probes.shapes import make_shapes
from cdviz.probes.probeset import load_probeset
from cdviz.prompts import match_texts, match_answer
torch.set_num_threads(1)
ad = load_model(sys.argv[1])
def queries(split, n):
    d = Path(sys.argv[3]) / split
    if not (d / "items.jsonl").is_file():
        make_shapes(d, n=n, seed=0, image_size=48, splits=(split,))
    ps = load_probeset(d)
    out = []
    for it in ps.items:
        if it.category != "colour":
            continue
        for k, q in match_texts(it.question, it.options):
            out.append((it, q, match_answer(it.question, it.options, it.correct, k) == "yes"))
    return ps, out
def feats(ps, qs):
    H, Y = [], []
    for i in range(0, len(qs), 32):
        chunk = qs[i:i + 32]
        images = [Image.open(ps.image_path(it)).convert("RGB") for it, _, _ in chunk]
        batch = ad.build_batch(images, [q for _, q, _ in chunk], [it.uid for it, _, _ in chunk])
        with torch.inference_mode():
            out = ad.model(**batch.inputs, output_hidden_states=True, use_cache=False)
        pos = batch.answer_pos
        hs = torch.stack([h[torch.arange(len(pos)), pos] for h in out.hidden_states], 1)  # [B, L+1, D]
        H.append(hs.float().numpy()); Y += [y for _, _, y in chunk]
    return np.concatenate(H), np.array(Y)
ps_tr, q_tr = queries("train", int(sys.argv[2]))
ps_te, q_te = queries("test", 600)
Htr, Ytr = feats(ps_tr, q_tr); Hte, Yte = feats(ps_te, q_te)
print("train queries", len(Ytr), "test", len(Yte))
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
for layer in range(Htr.shape[1]):
    pair = np.linalg.norm(Htr[0::2, layer] - Htr[1::2, layer], axis=1).mean()
    spread = np.linalg.norm(Htr[:, layer] - Htr[:, layer].mean(0), axis=1).mean()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=100.0)).fit(Htr[:, layer], Ytr)
    print(f"hidden state {layer}: train {clf.score(Htr[:, layer], Ytr):.3f}  test {clf.score(Hte[:, layer], Yte):.3f}  "
          f"|h(option a) - h(option b)| {pair:.3f}  vs spread {spread:.3f}")
