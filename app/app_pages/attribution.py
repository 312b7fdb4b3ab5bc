"""Attribution: does where a model looks (attention) match what its answer depends on (integrated
gradients over the image tokens)? Shown for the items the report sampled."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import charts, figures, results, state

run = state.require_run()
st.title("Attribution")
result = results.cached_analysis(run, "attribution")
if result is None:
    st.info("This run has no attribution result. Attribution runs both models (it is the one analysis that "
            "does), so the dashboard does not compute it: " + results.ATTRIBUTION_HINT.format(path=run.path) + ".")
    st.stop()

agreement = result.by_layer()
st.caption("Agreement between |attribution| and each layer's head-mean attention of the answer position, "
           f"averaged over {agreement['n'].max()} sampled items (spearman; top-10% IoU in the table).")
charts.show(figures.by_layer(agreement, "spearman", "spearman (higher = attention follows attribution)",
                             colour="model", rule=0.0, x="layer", x_title="layer (each model's own)",
                             title="Attention vs integrated-gradients attribution"), key="at_agreement")
st.markdown(state.markdown_table(agreement))

st.subheader("Sampled items")
c = st.columns(3)
uid = c[0].selectbox("Item", sorted(result.maps["uid"].astype(str).unique()), key="at_uid")
model = c[1].selectbox("Model", ["teacher", "student"], key="at_model")
layers = run.store.layers(model)
layer = c[2].selectbox("Attention layer", layers, index=len(layers) // 2, key="at_layer")
sub = result.maps[(result.maps["uid"].astype(str) == uid) & (result.maps["model"] == model)].sort_values("token")
if sub.empty:
    st.info(f"The attribution result has no map for {model} on this item.")
    st.stop()
grid = run.store.grid(uid, model)
attr = np.abs(sub["attribution"].to_numpy(np.float64))  # [N] magnitude: pushing down counts as used
att = state.item_map(run, uid, model, "t2i", layer, None, -1)
cmp = state.compare_maps(attr, grid, att, grid)
row = result.frame[(result.frame["uid"].astype(str) == uid) & (result.frame["model"] == model)
                   & (result.frame["layer"] == layer)]
if len(row):
    c = st.columns(2)
    c[0].metric("spearman (attribution vs attention)", f"{row['spearman'].iloc[0]:.3f}")
    c[1].metric("top-10% IoU", f"{row['topk_iou'].iloc[0]:.3f}")
index = state.items(run).set_index("uid")
image, size, why = state.item_image(run, index.loc[uid, "image"]) if uid in index.index else (None, None, "not in run")
boxes = state.item_boxes(index.loc[uid]) if uid in index.index else []
if why:
    st.caption(f"Maps drawn without the image: {state.md_escape(why)}.")
left, right = st.columns(2)  # two different quantities: each panel keeps its own colour scale
charts.show(figures.attention_overlay(cmp.teacher, grid, image, size, boxes, title=f"{model}: |integrated gradients|"),
            left, key="at_attr", stretch=False)
charts.show(figures.attention_overlay(cmp.student, grid, image, size, boxes, title=f"{model}: attention, layer {layer}"),
            right, key="at_att", stretch=False)
