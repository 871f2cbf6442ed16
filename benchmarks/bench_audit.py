"""The full audit of one student: apkit's batched audit against the paper's per-image protocol.

The paper's evaluation script (METHOD §4.2) walks the segmentation set with batch size 1: one
forward pass, then for every ground-truth class of the image one attribution call (Captum's
``LayerGradCam`` for Grad-CAM; the other methods of the paper have no library implementation that
batches pairs, so ``apkit.explain`` is called once per pair), a bilinear upsampling, the first
``np.where`` arg-max for the pointing game, min-max normalisation and scikit-learn's
``roc_curve`` + ``auc``; a pair counts when the class is predicted (logit > 0).  A full audit does
that for the teacher and the student with each of the four methods, adds the cosine similarity and
normalised L2 of the student's maps to the teacher's on the student's kept pairs, and the
per-image "mAP" of both models.

apkit's :func:`apkit.audit` does the same work with batched forward passes, all pairs of a batch in
one attribution call, the teacher's maps computed once, and batched metrics.  This script runs both
on the same models and images (the embedded synthetic segmentation split), in one process, and
checks that they keep the same pairs and give the same AUC, pointing, similarity and mAP.

The models are untrained, with their classifier bias raised so that every ground-truth class counts
as predicted: the cost depends on the number of pairs, not on what the weights have learnt.

Run:  python benchmarks/bench_audit.py [--model vgg16_bn] [--width-divisor 8] [--size 227] [--images 12]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from _common import Measurement, print_measurements, resolve_device, timed
from captum.attr import LayerAttribution, LayerGradCam
from sklearn.metrics import auc, average_precision_score, roc_curve

import apkit
from apkit import models
from apkit.core.modules import get_layer
from apkit.data import SyntheticShapes

VOID = 255
METHODS = ("gradcam", "excitation", "lrp", "rap")
Scores = dict[tuple[str, str], dict[tuple[int, int], tuple[float, float, float]]]


def _pair_map(model, gradcam, image, cls: int, method: str) -> np.ndarray:
    """One (image, class) map the per-image way: Captum for Grad-CAM, one apkit.explain call otherwise."""
    if method == "gradcam":
        attribution = gradcam.attribute(image, target=cls, relu_attributions=True)
        heat = LayerAttribution.interpolate(attribution, tuple(image.shape[-2:]), "bilinear")[0, 0]
    else:
        heat = apkit.explain(model, image, torch.tensor([[0, cls]], device=image.device), method=method)[0]
    return heat.detach().cpu().numpy()


def _localization(heat: np.ndarray, objects: np.ndarray, void: np.ndarray) -> tuple[float, float]:
    """The reference script's pointing hit and AUC of one map (void pixels left out of the AUC)."""
    where = np.where(heat == heat.max())
    hit = float(objects[where[0][0], where[1][0]])
    heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-5)
    keep = ~void
    fpr, tpr, _ = roc_curve(objects[keep], heat[keep])
    return float(auc(fpr, tpr)), hit


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.clip(a @ b / norms, -1, 1)) if norms > 0 else float("nan")


def _paper_model(model, dataset, device, teacher_maps: dict | None) -> tuple[dict, float, dict]:
    """One model's part of the per-image protocol: ``({method: {pair: (auc, hit, cos)}}, mAP, maps)``."""
    gradcam = LayerGradCam(model, get_layer(model, model.attribution_layer))
    scores = {method: {} for method in METHODS}
    maps, precisions = {}, []
    for index in range(len(dataset)):
        image, label, mask = dataset[index]
        image = image[None].to(device)
        with torch.no_grad():
            logits = model(image)[0].cpu()
        if label.sum() > 0:
            precisions.append(average_precision_score(label.numpy(), logits.numpy()))
        mask = mask.numpy()
        for value in np.unique(mask):
            if value in (0, VOID) or not logits[int(value) - 1] > 0:
                continue  # background, void, or a class the model does not predict
            cls = int(value) - 1
            for method in METHODS:
                heat = _pair_map(model, gradcam, image, cls, method)
                if np.isnan(heat).any():
                    continue
                maps[(index, cls, method)] = heat
                cos = float("nan") if teacher_maps is None else _cosine(heat, teacher_maps[(index, cls, method)])
                scores[method][(index, cls)] = (*_localization(heat, mask == value, mask == VOID), cos)
    return scores, float(np.mean(precisions)), maps


def paper_audit(teacher, student, dataset, device) -> tuple[Scores, dict[str, float]]:
    """The per-image protocol for the teacher and the student: scores per (model, method), and mAP."""
    teacher_scores, teacher_map, teacher_maps = _paper_model(teacher, dataset, device, None)
    student_scores, student_map, _ = _paper_model(student, dataset, device, teacher_maps)
    scores = {("teacher", m): s for m, s in teacher_scores.items()}
    scores.update({("student", m): s for m, s in student_scores.items()})
    return scores, {"teacher": teacher_map, "student": student_map}


def apkit_audit(teacher, student, dataset, batch_size: int, device) -> tuple[Scores, dict[str, float]]:
    """:func:`apkit.audit` of the student with the four methods: the same scores and mAP."""
    report = apkit.audit(teacher, {"student": student}, dataset, attribution_methods=METHODS,
                         batch_size=batch_size, device=device, progress=False)
    scores = {}
    for key, pairs in report.pairs.items():
        scores[key] = {(int(i), int(c)): (float(a), float(h), float(cos))
                       for i, c, k, a, h, cos in zip(pairs["image"], pairs["class"], pairs["kept"], pairs["auc"],
                                                     pairs["hit"], pairs["cos"]) if k}
    return scores, {name: float(values["map_image"]) for name, values in report.predictive.items()}


def compare(ours: tuple[Scores, dict], reference: tuple[Scores, dict]) -> tuple[bool, str, list[tuple[str, str]]]:
    """Same kept pairs per (model, method); AUC and cosine within 1e-4; identical hits; the same mAP.

    Also returns the (model, method) rows whose AUC or cosine differ by more than 1e-4, when nothing
    else differs.
    """
    (our_scores, our_map), (ref_scores, ref_map) = ours, reference
    if set(our_scores) != set(ref_scores):
        return False, f"(model, method) rows differ: {sorted(our_scores)} vs {sorted(ref_scores)}"
    worst = {"auc": 0.0, "cos": 0.0}
    where = {"auc": "", "cos": ""}  # the (model, method) row of each largest difference
    flips = pairs = 0
    beyond = []
    for key, ref in ref_scores.items():
        mine = our_scores[key]
        if set(mine) != set(ref) or not ref:
            return False, f"{key}: kept pairs differ ({len(mine)} apkit vs {len(ref)} per image) or none kept", []
        a = np.array([mine[p] for p in sorted(ref)])
        b = np.array([ref[p] for p in sorted(ref)])
        if not np.array_equal(np.isnan(a[:, 2]), np.isnan(b[:, 2])):
            return False, f"{key}: the pairs with a defined cosine differ", []
        both = ~np.isnan(b[:, 2])
        for column, error in (("auc", float(np.abs(a[:, 0] - b[:, 0]).max())),
                              ("cos", float(np.abs(a[both, 2] - b[both, 2]).max(initial=0.0)))):
            if error > worst[column]:
                worst[column], where[column] = error, f" ({'/'.join(key)})"
            if error > 1e-4 and key not in beyond:
                beyond.append(key)
        flips += int((a[:, 1] != b[:, 1]).sum())
        pairs += len(ref)
    map_error = max(abs(our_map[k] - ref_map[k]) for k in ref_map)
    # Float32 maps computed in a batch and one at a time differ in the last bits, which can swap two
    # nearly tied pixels of a map and move its AUC by 1 / (positives x negatives).
    equal = worst["auc"] <= 1e-4 and worst["cos"] <= 1e-4 and flips == 0 and map_error <= 1e-6
    if flips or map_error > 1e-6:
        beyond = []  # not only AUC or cosine differ: nothing for a float64 recheck to explain
    return equal, (f"{len(ref_scores)} (model, method) rows, {pairs} kept pairs identical; AUC max difference "
                   f"{worst['auc']:.1e}{where['auc']} (<= 1e-4), cosine {worst['cos']:.1e}{where['cos']} (<= 1e-4), "
                   f"{flips} pointing hits differ, per-image mAP {map_error:.1e} (<= 1e-6)"), beyond


def _maps_both_ways(net, images: torch.Tensor, pairs: torch.Tensor, method: str, batch_size: int):
    """One model's maps of ``pairs`` the audit's way (batches of images) and one pair at a time."""
    batches = [(images[start:start + batch_size], _local(pairs, start, batch_size))
               for start in range(0, len(images), batch_size)]
    batched = torch.cat([apkit.explain(net, part, local, method=method) for part, local in batches if len(local)])
    single = torch.stack([apkit.explain(net, images[i:i + 1], torch.tensor([[0, c]], device=images.device),
                                        method=method)[0]
                          for i, c in pairs.tolist()])
    return batched, single


def _local(pairs: torch.Tensor, start: int, batch_size: int) -> torch.Tensor:
    inside = (pairs[:, 0] >= start) & (pairs[:, 0] < start + batch_size)
    return torch.stack([pairs[inside, 0] - start, pairs[inside, 1]], 1)


def float64_recheck(rows: list[tuple[str, str]], nets: dict, dataset, scores: Scores,
                    batch_size: int) -> tuple[bool, str]:
    """Recompute the maps of rows beyond tolerance in float64, batched and per pair, on their kept pairs.

    A float32 difference between a batched and a per-pair map is either rounding, which float64
    removes, or a batching error, which it keeps.  Passes when every row's float64 maps agree to
    1e-9 of each map's largest value; also reports how far each side's float32 maps are from float64.
    """
    notes, equal = [], True
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    for model_name, method in rows:
        device = next(nets[model_name].parameters()).device
        pairs = torch.tensor(sorted(scores[(model_name, method)]), device=device)
        wide = copy.deepcopy(nets[model_name]).double()
        batched, single = _maps_both_ways(wide, images.to(device, torch.float64), pairs, method, batch_size)
        scale = single.abs().amax((1, 2), keepdim=True).clamp(min=1e-300)
        batching = float(((batched - single).abs() / scale).max())
        narrow_b, narrow_s = _maps_both_ways(nets[model_name], images.to(device), pairs, method, batch_size)
        rounding = max(float(((narrow_s.double() - single).abs() / scale).max()),
                       float(((narrow_b.double() - batched).abs() / scale).max()))
        equal &= batching <= 1e-9
        notes.append(f"{model_name}/{method} recomputed in float64: batched vs per pair {batching:.1e} of a map's "
                     f"largest value (<= 1e-9); each side's float32 maps differ from float64 by up to {rounding:.1e}")
    return equal, "; ".join(notes)


def _predict_everything(net) -> None:
    head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias.add_(10.0)  # every class predicted: all ground-truth pairs are scored


def measure(*, model: str = "vgg16_bn", width_divisor: int = 8, size: int = 227, images: int = 12,
            batch_size: int = 16, repeats: int = 1, device: torch.device | str = "cpu") -> list[Measurement]:
    """Audit one student of ``model`` (``width_divisor`` times narrower) both ways, with four methods."""
    device = torch.device(device)
    dataset = SyntheticShapes("seg", num_samples=images, image_size=size)
    torch.manual_seed(0)
    options = {"input_size": size} if model.startswith("vgg") else {}
    teacher = models.create(model, num_classes=dataset.num_classes, **options).to(device).eval()
    student = models.create(model, num_classes=dataset.num_classes, width_divisor=width_divisor,
                            **options).to(device).eval()
    for net in (teacher, student):
        _predict_everything(net)
    for i in range(len(dataset)):  # render (and cache) every image before either side is timed
        dataset[i]
    one = torch.utils.data.Subset(dataset, [0])
    apkit_audit(teacher, student, one, batch_size, device)  # warm-up of both sides
    paper_audit(teacher, student, one, device)
    t_apkit, peak_apkit, ours = timed(lambda: apkit_audit(teacher, student, dataset, batch_size, device),
                                      repeats=repeats, device=device)
    t_paper, peak_paper, reference = timed(lambda: paper_audit(teacher, student, dataset, device),
                                           repeats=repeats, device=device)
    equal, check, beyond = compare(ours, reference)
    if beyond:  # everything else agreed: float32 rounding or a batching error?
        equal, recheck = float64_recheck(beyond, {"teacher": teacher, "student": student}, dataset,
                                         reference[0], batch_size)
        check += f"; {recheck}"
    pairs = len(reference[0][("teacher", "gradcam")])
    return [Measurement(
        name="audit", operation=f"full audit of {model} and its /{width_divisor} student at {size}x{size}, "
                                f"{', '.join(METHODS)}; {images} segmentation images, {pairs} (image, class) pairs",
        apkit=f"apkit.audit, batches of {batch_size}",
        baseline="paper protocol: batch 1, one attribution call per pair (Captum for Grad-CAM), sklearn per map",
        apkit_s=t_apkit, baseline_s=t_paper, equal=equal, check=check, apkit_peak=peak_apkit,
        baseline_peak=peak_paper, device=str(device), repeats=repeats,
        extra={"pairs": pairs, "images": images, "methods": list(METHODS)},
    )]


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--width-divisor", type=int, default=8, help="the student is this many times narrower")
    parser.add_argument("--size", type=int, default=227, help="image side")
    parser.add_argument("--images", type=int, default=12, help="segmentation images")
    parser.add_argument("--batch-size", type=int, default=16, help="apkit's images per batch")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    rows = measure(model=args.model, width_divisor=args.width_divisor, size=args.size, images=args.images,
                   batch_size=args.batch_size, repeats=args.repeats, device=resolve_device(args.device))
    print_measurements(rows)
    if rows[0].equal is False:
        raise SystemExit("apkit's audit and the paper loop disagree")
    return rows


if __name__ == "__main__":
    main()
